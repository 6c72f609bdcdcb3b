"""Regularisers added to a training objective from the base method's own forward passes.

:class:`TripletTerm` is the angular triplet regulariser (TLA, METHODS.md section 5) with the sensitivity
positive = the adversarial example the base method already made: its features come from the base's
training-mode forwards (captured by a hook on the last ``nn.Linear``), so L_sa costs no extra pass.
"""

from __future__ import annotations

import torch
from torch import nn

from .base import LossOutput
from .triplet import AngularDistance, AngularTripletRegularizer, BatchHardMiner, NegativePool, RandomMiner, \
    SemiHardMiner



class TripletTerm(nn.Module):
    """weight_sa * L_sa (+ norm penalty) on (h(x), h(x_adv)) captured from the base's forwards.

    ``captured``: features of the base's training-mode forwards in call order, [h(x), h(x_adv)].
    """

    def __init__(self, weight_sa: float, norm_weight: float, margin: float, miner: str = "nearest",
                 pool_batches: int = 1, signed: bool = False, seed: int = 0):
        super().__init__()
        distance = AngularDistance(signed=signed)
        miners = {"nearest": lambda: BatchHardMiner(distance), "semi-hard": lambda: SemiHardMiner(distance),
                  "random": lambda: RandomMiner(torch.Generator().manual_seed(seed))}
        pool = NegativePool(pool_batches - 1) if pool_batches > 1 else None
        self.reg = AngularTripletRegularizer(weight_sa=weight_sa, weight_ia=0.0, norm_weight=norm_weight,
                                             margin=margin, miner=miners[miner](), pool=pool, distance=distance)
        self.label = "triplet-sa"

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, out: LossOutput,
                captured: list[torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        if len(captured) < 2:
            raise RuntimeError("the triplet term needs the clean and adversarial training forwards of the base")
        loss, stats = self.reg(captured[0], y, h_sens=captured[1])
        return loss, {k: float(v) for k, v in stats.items()}
