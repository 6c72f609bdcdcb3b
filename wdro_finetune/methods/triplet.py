"""Angular triplet regularisation (TLA: Mao et al. 2019; Ovalle et al.), METHODS.md section 5.

Pieces, composed like pytorch-metric-learning (distance -> miner -> loss -> regulariser):

    AngularDistance     D(a, b) = 1 - |cos(a, b)| (TLA) or 1 - cos(a, b) (signed=True)
    BatchHardMiner      negative = nearest different-class member of the candidate pool (TLA's negative,
                        which the TLA paper calls "semi-hard" because the pool is a mini-batch, not the data set)
    SemiHardMiner       FaceNet's semi-hard: nearest different-class member FARTHER than the positive,
                        falling back to the nearest one when no such member exists
    RandomMiner         a uniformly random different-class member
    NegativePool        detached features + labels of the last k batches (extra negative candidates)
    TripletLoss         mean_i max(D(a_i, p_i) - D(a_i, n_i) + margin, 0) over anchors that have a negative
    AngularTripletRegularizer   weight_sa * L_sa + weight_ia * L_ia + norm_weight * feature norms

Features are penultimate features h(x): (N, D), captured by ``wdro_finetune.models.features.FeatureHook`` on the
forward passes the base method already makes, so the regulariser costs no extra pass.
Miners return indices into the pool, -1 for an anchor whose pool holds no different-class member; such anchors
are left out of the loss means.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..config.parts import NoOptions
from ..registry import Registry

__all__ = [
    "angular_distance",
    "pairwise_angular_distance",
    "AngularDistance",
    "MINERS",
    "BatchHardMiner",
    "SemiHardMiner",
    "RandomMiner",
    "NegativePool",
    "TripletOutput",
    "TripletLoss",
    "feature_norm_penalty",
    "AngularTripletRegularizer",
]


def angular_distance(a: torch.Tensor, b: torch.Tensor, signed: bool = False, eps: float = 1e-12) -> torch.Tensor:
    """Row-wise angular distance: a, b (N, D) -> (N,). 1 - |cos| in [0, 1] (default), 1 - cos in [0, 2] if signed.

    A zero row has cosine 0 with everything (distance 1).
    """
    cos = (F.normalize(a, dim=1, eps=eps) * F.normalize(b, dim=1, eps=eps)).sum(dim=1)
    return 1.0 - (cos if signed else cos.abs())


def pairwise_angular_distance(
    a: torch.Tensor, b: torch.Tensor, signed: bool = False, eps: float = 1e-12
) -> torch.Tensor:
    """All-pairs angular distance: a (N, D), b (M, D) -> (N, M)."""
    cos = F.normalize(a, dim=1, eps=eps) @ F.normalize(b, dim=1, eps=eps).T
    return 1.0 - (cos if signed else cos.abs())


class AngularDistance:
    """Angular distance object: ``d(a, b)`` row-wise (N,), ``d.pairwise(a, b)`` all pairs (N, M)."""

    def __init__(self, signed: bool = False, eps: float = 1e-12):
        self.signed, self.eps = signed, eps

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return angular_distance(a, b, self.signed, self.eps)

    def pairwise(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return pairwise_angular_distance(a, b, self.signed, self.eps)

    def __repr__(self) -> str:
        return f"AngularDistance(signed={self.signed})"


MINERS: Registry = Registry("triplet miner")  # --triplet-miner: name -> miner class (``build(distance, seed)``)


class _DistanceMiner:
    """A miner that compares distances (``build`` ignores the seed)."""

    Options = NoOptions

    def __init__(self, distance: AngularDistance | None = None):
        self.distance = distance or AngularDistance()

    @classmethod
    def build(cls, distance: AngularDistance, seed: int = 0):
        return cls(distance)


@MINERS.register("nearest")
class BatchHardMiner(_DistanceMiner):
    """Hardest negative: the different-class pool member with the SMALLEST distance to the anchor."""

    @torch.no_grad()
    def mine(self, anchor_feats, anchor_labels, pool_feats, pool_labels, positive_feats=None) -> torch.Tensor:
        """anchor_feats (N, D), anchor_labels (N,), pool_feats (M, D), pool_labels (M,) -> (N,) long, -1 if none."""
        dist, different = _masked_distances(self.distance, anchor_feats, anchor_labels, pool_feats, pool_labels)
        return _argmin_or_none(dist, different)


@MINERS.register("semi-hard")
class SemiHardMiner(_DistanceMiner):
    """Semi-hard negative: nearest different-class pool member with D(a, n) > D(a, p); else the nearest one.

    Needs ``positive_feats`` (N, D) in ``mine``.
    """

    @torch.no_grad()
    def mine(self, anchor_feats, anchor_labels, pool_feats, pool_labels, positive_feats=None) -> torch.Tensor:
        """As BatchHardMiner.mine, plus positive_feats (N, D) (required)."""
        if positive_feats is None:
            raise ValueError("SemiHardMiner needs positive_feats to compare negatives with D(anchor, positive)")
        dist, different = _masked_distances(self.distance, anchor_feats, anchor_labels, pool_feats, pool_labels)
        d_ap = self.distance(anchor_feats, positive_feats)
        semi_hard = different & (dist > d_ap.unsqueeze(1))
        return torch.where(semi_hard.any(dim=1), _argmin_or_none(dist, semi_hard), _argmin_or_none(dist, different))


@MINERS.register("random")
class RandomMiner:
    """Uniformly random different-class pool member; ``generator`` (CPU torch.Generator) makes it reproducible."""

    Options = NoOptions

    def __init__(self, generator: torch.Generator | None = None):
        self.generator = generator

    @classmethod
    def build(cls, distance: AngularDistance, seed: int = 0) -> "RandomMiner":
        return cls(torch.Generator().manual_seed(seed))

    @torch.no_grad()
    def mine(self, anchor_feats, anchor_labels, pool_feats, pool_labels, positive_feats=None) -> torch.Tensor:
        different = anchor_labels.unsqueeze(1) != pool_labels.unsqueeze(0)
        scores = torch.rand(different.shape, generator=self.generator).to(different.device)
        return _argmin_or_none(-scores, different)


class NegativePool:
    """Detached features and labels of the last ``size_in_batches`` pushed batches (oldest first).

    ``candidates(feats, labels)`` puts the current batch (with its graph: gradients reach current negatives)
    in front of the stored batches (detached: no gradient). Push the current batch AFTER mining so that it is
    not its own duplicate. Stored features go stale as the model trains; ``clear()`` e.g. between epochs.
    """

    def __init__(self, size_in_batches: int):
        if size_in_batches < 1:
            raise ValueError(f"size_in_batches must be >= 1, got {size_in_batches}")
        self.size_in_batches = size_in_batches
        self._batches: deque[tuple[torch.Tensor, torch.Tensor]] = deque(maxlen=size_in_batches)

    def push(self, feats: torch.Tensor, labels: torch.Tensor) -> None:
        """feats (B, D), labels (B,): stored detached copies; the oldest batch drops out when full."""
        self._batches.append((feats.detach().clone(), labels.detach().clone()))

    def contents(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Stored (M, D) features and (M,) labels, oldest batch first, or None when empty."""
        if not self._batches:
            return None
        return torch.cat([f for f, _ in self._batches]), torch.cat([y for _, y in self._batches])

    def candidates(self, feats: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Current batch (B, D), (B,) followed by the stored batches: ((B + M, D), (B + M,))."""
        stored = self.contents()
        if stored is None:
            return feats, labels
        return torch.cat([feats, stored[0].to(feats.dtype)]), torch.cat([labels, stored[1]])

    def clear(self) -> None:
        self._batches.clear()

    def __len__(self) -> int:
        """Number of stored batches (<= size_in_batches)."""
        return len(self._batches)


@dataclass
class TripletOutput:
    """loss: 0-dim; negative: (N, D) mined negatives (rows of invalid anchors are placeholders);
    valid: (N,) bool, anchor had a negative; d_ap, d_an: (N,) distances to positive and negative."""

    loss: torch.Tensor
    negative: torch.Tensor
    valid: torch.Tensor
    d_ap: torch.Tensor
    d_an: torch.Tensor


class TripletLoss(nn.Module):
    """mean_i max(D(a_i, p_i) - D(a_i, n_i) + margin, 0), negatives mined from a pool (default: the batch).

    Args: margin (TLA: 0.05 MNIST, 0.03 CIFAR); distance (default AngularDistance()); miner (default
    BatchHardMiner with the same distance).
    """

    def __init__(self, margin: float = 0.03, distance: AngularDistance | None = None, miner=None):
        super().__init__()
        self.margin = float(margin)
        self.distance = distance or AngularDistance()
        self.miner = miner if miner is not None else BatchHardMiner(self.distance)

    def forward(
        self,
        anchor: torch.Tensor,
        positive: torch.Tensor,
        labels: torch.Tensor,
        pool_feats: torch.Tensor | None = None,
        pool_labels: torch.Tensor | None = None,
    ) -> TripletOutput:
        """anchor, positive (N, D); labels (N,); pool (M, D), (M,), defaults to (anchor, labels)."""
        if pool_feats is None:
            pool_feats, pool_labels = anchor, labels
        index = self.miner.mine(anchor, labels, pool_feats, pool_labels, positive)
        valid = index >= 0
        negative = pool_feats.index_select(0, index.clamp_min(0))
        d_ap, d_an = self.distance(anchor, positive), self.distance(anchor, negative)
        hinge = torch.relu(d_ap - d_an + self.margin)
        return TripletOutput(_masked_mean(hinge, valid), negative, valid, d_ap, d_an)


def feature_norm_penalty(
    a: torch.Tensor, p: torch.Tensor, n: torch.Tensor, valid: torch.Tensor | None = None
) -> torch.Tensor:
    """mean_i (||a_i|| + ||p_i|| + ||n_i||) over rows (only the ``valid`` rows if given): (N, D) x3 -> 0-dim."""
    norms = a.norm(dim=1) + p.norm(dim=1) + n.norm(dim=1)
    return norms.mean() if valid is None else _masked_mean(norms, valid)


class AngularTripletRegularizer(nn.Module):
    """weight_sa * L_sa + weight_ia * L_ia + norm_weight * (norm penalty of each triplet term used).

    L_sa: anchor h(x) clean, positive h(x_sens) its sensitivity (adversarial) example; L_ia: positive h(x_inv)
    an invariance example of x. Negatives for both are mined among the clean features of the batch plus the
    pool. Defaults are TLA's CIFAR values (margin 0.03, weight 2, norm weight 1e-3); MNIST: 0.05, 0.5, 1e-4.

    Args:
        miner: default BatchHardMiner (TLA's nearest different-class negative).
        pool: optional NegativePool; the current clean batch is pushed into it after every call.
    """

    def __init__(
        self,
        weight_sa: float = 2.0,
        weight_ia: float = 0.0,
        norm_weight: float = 1e-3,
        margin: float = 0.03,
        miner=None,
        pool: NegativePool | None = None,
        distance: AngularDistance | None = None,
    ):
        super().__init__()
        self.weight_sa, self.weight_ia, self.norm_weight = float(weight_sa), float(weight_ia), float(norm_weight)
        self.triplet = TripletLoss(margin, distance, miner)
        self.pool = pool

    def forward(
        self,
        h_clean: torch.Tensor,
        labels: torch.Tensor,
        h_sens: torch.Tensor | None = None,
        h_inv: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """h_clean, h_sens, h_inv: (N, D); labels (N,). Returns (0-dim loss, detached stats).

        A term with a nonzero weight needs its positive (ValueError otherwise); a zero-weight term is skipped.
        """
        if self.pool is None:
            pool_feats, pool_labels = h_clean, labels
        else:
            pool_feats, pool_labels = self.pool.candidates(h_clean, labels)
        total = h_clean.new_zeros(())
        stats: dict[str, torch.Tensor] = {}
        for name, weight, positive in (("sa", self.weight_sa, h_sens), ("ia", self.weight_ia, h_inv)):
            if weight == 0.0:
                continue
            if positive is None:
                raise ValueError(f"weight_{name}={weight} needs positive features, got None")
            out = self.triplet(h_clean, positive, labels, pool_feats, pool_labels)
            norm = feature_norm_penalty(h_clean, positive, out.negative, out.valid)
            total = total + weight * out.loss + self.norm_weight * norm
            stats.update({
                f"triplet_{name}": out.loss.detach(),
                f"feature_norm_{name}": norm.detach(),
                f"valid_fraction_{name}": out.valid.float().mean(),
                f"d_ap_{name}": out.d_ap.detach().mean(),
                f"d_an_{name}": out.d_an.detach().mean(),
            })
        if self.pool is not None:
            self.pool.push(h_clean, labels)
        return total, stats


def _masked_distances(distance, anchor_feats, anchor_labels, pool_feats, pool_labels):
    """(N, M) distances and the (N, M) bool mask of different-class pairs."""
    dist = distance.pairwise(anchor_feats, pool_feats)
    different = anchor_labels.unsqueeze(1) != pool_labels.unsqueeze(0)
    return dist, different


def _argmin_or_none(dist: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Row-wise argmin of dist over allowed entries: (N, M) -> (N,) long, -1 where a row allows nothing."""
    index = dist.masked_fill(~allowed, float("inf")).argmin(dim=1)
    return torch.where(allowed.any(dim=1), index, torch.full_like(index, -1))


def _masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of values over mask (0 with graph when the mask is empty): (N,), (N,) -> 0-dim."""
    return torch.where(mask, values, torch.zeros_like(values)).sum() / mask.sum().clamp_min(1)
