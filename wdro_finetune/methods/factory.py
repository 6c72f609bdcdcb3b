"""Build a :class:`TrainingObjective` from a fine-tuning config (the only place names map to parts)."""

from __future__ import annotations

import torch

from ..attacks.transport import TransportCost
from ..errors import UserError
from ..config.finetune import FinetuneConfig
from .base import AdversarialCE, Mart, Trades, Udr
from .maximizers import (KnapsackMaximizer, NoiseFgsmMaximizer, PointwiseMaximizer, RadiusRamp, SoftBallMaximizer,
                         WassersteinMaximizer)
from .objective import TrainingObjective
from .regularizers import TripletTerm
from .reweight import make_aggregator

_ARMOR_EPS_DEFAULT = {"armor-kl": 0.02, "armor-kl-learned": 0.02, "armor-alpha": 0.5}


def build_objective(cfg: FinetuneConfig, inv_positives: torch.Tensor | None = None) -> TrainingObjective:
    """Base loss + inner maximiser + re-weighting (+ triplet term) as the config says.

    ``inv_positives``: (N_train, C, H, W) invariance examples of the training images, for ``--triplet``
    ia / sa+ia (see :func:`wdro_finetune.invariance.positives.training_positives`).
    """
    norm = cfg.threat_model.value
    steps = 1 if cfg.method in ("fgsm-at", "n-fgsm-at") else cfg.inner_steps
    step_size = cfg.inner_step_size
    if cfg.threat == "w2":
        if step_size is not None:
            raise UserError("--inner-step-size sets the pointwise attacks' step; W_2 maximisers have their own")
        maximizer = KnapsackMaximizer(delta=cfg.radius, norm=norm, steps=steps, budget_cap=cfg.w2_budget_cap) \
            if cfg.w2_inner == "knapsack" else \
            WassersteinMaximizer(delta=cfg.radius, norm=norm, steps=steps, budget_cap=cfg.w2_budget_cap,
                                 stop_flipped=cfg.w2_stop_flipped)
    elif cfg.method == "fgsm-at":
        maximizer = PointwiseMaximizer(eps=cfg.eps, norm=norm, steps=1,
                                       step_size=1.25 * cfg.eps if step_size is None else step_size, start="uniform")
    elif cfg.method == "n-fgsm-at":
        maximizer = NoiseFgsmMaximizer(eps=cfg.eps, norm=norm, step_size=step_size)
    elif cfg.method == "pgd-at":
        maximizer = PointwiseMaximizer(eps=cfg.eps, norm=norm, steps=steps, step_size=step_size, start="uniform")
    else:
        maximizer = PointwiseMaximizer(eps=cfg.eps, norm=norm, steps=steps, step_size=step_size, start="normal")
    if cfg.method == "udr" and (cfg.threat == "w2" or norm != "Linf"):
        raise UserError("--method udr supports --threat pointwise with --threat-model Linf")
    if cfg.method == "udr" and cfg.eps_ramp:
        raise UserError("--eps-ramp is not available with --method udr (its adaptive cost weight assumes a fixed eps)")
    cost = None
    if cfg.armor_cost_weight:
        if cfg.threat == "w2" or cfg.method == "udr":
            raise UserError("--armor-cost-weight (soft-ball transport) goes with --threat pointwise and a base "
                            "other than udr (UDR has its own soft ball)")
        cost = TransportCost(cfg.armor_cost_weight, cfg.armor_cost_p, cfg.armor_cost_q)
        maximizer = SoftBallMaximizer(cfg.eps, cost, norm=norm, steps=steps, step_size=step_size)
    if cfg.eps_ramp:
        maximizer = RadiusRamp(maximizer, cfg.eps_ramp)
    bases = {"trades": lambda: Trades(maximizer, beta=cfg.beta), "mart": lambda: Mart(maximizer, beta=cfg.beta),
             "udr": lambda: Udr(cfg.eps, steps=steps, step_size=step_size)}
    base = bases[cfg.method]() if cfg.method in bases else AdversarialCE(maximizer, cfg.method)
    aggregator = None
    if cfg.reweight != "none":
        eps_d = cfg.armor_eps if cfg.armor_eps is not None else _ARMOR_EPS_DEFAULT[cfg.reweight]
        params = {"eps": eps_d}
        if cfg.reweight == "armor-kl":
            params["kappa"] = cfg.armor_kappa
        if cfg.reweight == "armor-alpha":
            params["alpha"] = cfg.armor_alpha
        try:
            aggregator = make_aggregator(cfg.reweight, **params)
        except ValueError as exc:
            raise UserError(f"--reweight {cfg.reweight}: {exc}") from None
    mix_t = cfg.armor_t if cfg.reweight != "none" else 0.0
    regularizer = None
    if cfg.triplet != "none":
        parts = cfg.triplet.split("+")
        weight_sa = cfg.triplet_weight_sa if "sa" in parts else 0.0
        weight_ia = cfg.triplet_weight_ia if "ia" in parts else 0.0
        if weight_ia and inv_positives is None:
            raise UserError(f"--triplet {cfg.triplet} needs the invariance examples of the training images")
        regularizer = TripletTerm(weight_sa, cfg.triplet_norm_weight, cfg.triplet_margin, cfg.triplet_miner,
                                  cfg.triplet_pool, signed=cfg.triplet_distance == "cosine", seed=cfg.seed,
                                  weight_ia=weight_ia, inv_positives=inv_positives if weight_ia else None)
    return TrainingObjective(base, cfg.threat, aggregator, cfg.reweight, mix_t, regularizer, cost, inner=cfg.w2_inner)
