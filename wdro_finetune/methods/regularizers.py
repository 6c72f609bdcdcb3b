"""Regularisers added to a training objective from the base method's own forward passes.

:class:`TripletTerm` is the angular triplet regulariser (TLA, METHODS.md section 5). L_sa: the positive is
the adversarial example the base method already made; its features come from the base's training-mode
forwards (captured by a hook on the last ``nn.Linear``), so L_sa costs no extra pass. L_ia: the positive is
an invariance example of the same training image (looked up by the batch's training indices); it is not
among the base's inputs, so L_ia costs one training-mode forward (and backward) of the batch.
"""

from __future__ import annotations

import torch
from torch import nn

from ..models.features import FeatureHook
from ..distributed import unwrap
from .base import LossOutput
from .triplet import MINERS, AngularDistance, AngularTripletRegularizer, NegativePool


class TripletTerm(nn.Module):
    """weight_sa * L_sa + weight_ia * L_ia (+ norm penalties).

    ``captured``: features of the base's training-mode forwards in call order, [h(x), h(x_adv)].
    ``inv_positives``: (N_train, C, H, W) invariance examples, row i for training image i (needed when
    weight_ia > 0; the step's ``index`` (B,) selects the rows of the batch).
    """

    def __init__(self, weight_sa: float, norm_weight: float, margin: float, miner: str = "nearest",
                 pool_batches: int = 1, signed: bool = False, seed: int = 0, weight_ia: float = 0.0,
                 inv_positives: torch.Tensor | None = None):
        super().__init__()
        distance = AngularDistance(signed=signed)
        pool = NegativePool(pool_batches - 1) if pool_batches > 1 else None
        if weight_ia and inv_positives is None:
            raise ValueError("weight_ia > 0 needs inv_positives")
        self.reg = AngularTripletRegularizer(weight_sa=weight_sa, weight_ia=weight_ia, norm_weight=norm_weight,
                                             margin=margin, miner=MINERS.get(miner).build(distance, seed), pool=pool,
                                             distance=distance)
        self.inv_positives = inv_positives
        self.label = "triplet-" + "+".join(n for n, w in (("sa", weight_sa), ("ia", weight_ia)) if w)

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: LossOutput,
                captured: list[torch.Tensor], index: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, dict[str, float]]:
        if len(captured) < 2:
            raise RuntimeError("the triplet term needs the clean and adversarial training forwards of the base")
        h_inv = None
        if self.reg.weight_ia:
            if index is None:
                raise RuntimeError("L_ia needs the training indices of the batch")
            x_inv = self.inv_positives[index.cpu()].to(device=x.device, dtype=x.dtype)
            with FeatureHook(unwrap(model)) as hook:
                model(x_inv)
            h_inv = hook.pop()[0]
        loss, stats = self.reg(captured[0], y, h_sens=captured[1] if self.reg.weight_sa else None, h_inv=h_inv)
        return loss, {k: float(v) for k, v in stats.items()}
