"""Build a :class:`TrainingObjective` from a fine-tuning config: one part of each kind, looked up in the
registries of :mod:`wdro_finetune.methods.parts` by its option, and composed."""

from __future__ import annotations

import torch

from ..attacks.base import Attack
from ..attacks.ramp import RadiusRamp
from ..attacks.transport import TransportCost
from ..config.finetune import FinetuneConfig
from ..errors import UserError
from .objective import TrainingObjective
from .parts import BASE_LOSSES, INNER_ATTACKS, REGULARIZERS, REWEIGHTINGS, THREATS, Setting


def build_objective(cfg: FinetuneConfig, inv_positives: torch.Tensor | None = None,
                    sensitivity: torch.Tensor | None = None) -> TrainingObjective:
    """Base loss + inner maximiser + re-weighting (+ triplet term) as the config says.

    ``inv_positives``: (N_train, C, H, W) invariance examples of the training images, for ``--triplet``
    ia / sa+ia (see :func:`wdro_finetune.invariance.positives.training_positives`); ``sensitivity``: the same
    shape, their stored FGSM examples for ``--inner-examples precomputed-fgsm``
    (:func:`wdro_finetune.train.sensitivity_store.stored_examples`).
    """
    base, threat = BASE_LOSSES.get(cfg.method), THREATS.get(cfg.threat)
    threat.check(cfg)
    base.check(cfg)
    setting = Setting(cfg.eps, cfg.threat_model.value, base.steps or cfg.inner_steps, base.start, sensitivity)
    attack, cost = _inner_attack(cfg, INNER_ATTACKS.get(threat.inner(cfg, base)), setting) \
        if base.attack is not None else (None, None)
    loss = base.build(base.options(cfg), cfg.method, setting, attack)
    reweighting = REWEIGHTINGS.get(cfg.reweight)
    try:
        aggregator = reweighting.build(reweighting.options(cfg))
    except ValueError as exc:
        raise UserError(f"--reweight {cfg.reweight}: {exc}") from None
    regularizer = REGULARIZERS.get(cfg.triplet)
    term = regularizer.build(regularizer.options(cfg), cfg.seed, inv_positives)
    return TrainingObjective(loss, cfg.threat, aggregator, cfg.reweight, reweighting.mix(reweighting.options(cfg)),
                             term, cost, inner=cfg.w2_inner)


def _inner_attack(cfg: FinetuneConfig, inner, setting: Setting) -> tuple[Attack, TransportCost | None]:
    """The inner maximiser (wrapped in the eps warm-up with ``--eps-ramp``) and its transport cost."""
    opts = inner.options(cfg)
    attack = inner.build(opts, setting)
    return (RadiusRamp(attack, cfg.eps_ramp) if cfg.eps_ramp else attack), inner.cost(opts)
