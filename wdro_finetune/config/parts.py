"""The options of the parts of a training method, declared once with :func:`~.options.option`.

A training method is composed of parts, one of each kind: a base loss (``--method``), an inner maximiser (chosen
by ``--threat`` / ``--w2-inner`` / ``--armor-cost-weight`` and the base loss), a re-weighting (``--reweight``) and a
regulariser (``--triplet``, with its negative miner ``--triplet-miner``). Each part's own options are one small
frozen dataclass here (``KLWeight``, ``W2Ball``, ...; a part without options has :class:`NoOptions`); the part
itself (how it is built) is an entry of a registry in :mod:`wdro_finetune.methods.parts`, whose ``Options`` names
its dataclass; the choice of a part is declared ``choices_from=<key>`` and its names are those registry names
(``methods.parts.PART_CHOICES[key]``), written once there. One group per part
kind collects the choice and the options of all its parts (:class:`BaseLossOptions`, ...); the fine-tuning config
composes the groups. They live one floor below the training code so that the config (and its checks) never
import it. Budgets in pixel units of [0, 1].
"""

from __future__ import annotations

from dataclasses import dataclass

from .options import option

@dataclass(frozen=True)
class NoOptions:
    """A part without options of its own."""


# ---------------------------------------------------------------- base losses (--method)
@dataclass(frozen=True)
class KLWeight:
    """TRADES, MART: the weight of the KL term."""

    beta: float = option(6.0, "TRADES weight of the KL term (MART: of the weighted KL term)", ge=0)


@dataclass(frozen=True)
class _MethodChoice:
    method: str = option("trades", "base method", choices_from="method")


@dataclass(frozen=True)
class BaseLossOptions(KLWeight, _MethodChoice):
    """The base loss and the options of every base loss."""


# ---------------------------------------------------------------- inner maximisers
@dataclass(frozen=True)
class InnerSteps:
    """Every inner maximiser: its number of steps (fgsm-at and n-fgsm-at take one)."""

    inner_steps: int = option(10, "attack steps of the inner maximisation", gt=0)


@dataclass(frozen=True)
class PointwiseStep(InnerSteps):
    """The pointwise attacks (PGD, FGSM, N-FGSM, soft ball; UDR's own): their step."""

    inner_step_size: float | None = option(
        None, "step of the pointwise inner attack in [0,1] pixel units (default 2.5*eps/K; fgsm-at 1.25*eps; "
              "n-fgsm-at eps)", gt=0)


@dataclass(frozen=True)
class SoftBall(PointwiseStep):
    """The soft-ball transport attack: the attacker pays W * ||x' - x||_p^q instead of a hard eps-ball."""

    armor_cost_weight: float = option(0.0, "soft-ball transport: the attacker pays W * ||x'-x||_p^q instead of a "
                                           "hard eps-ball, and the per-sample losses include -cost (default 0: hard "
                                           "ball)", ge=0)
    armor_cost_p: float = option(2.0, "norm of the transport cost: 1, 2 or inf")
    armor_cost_q: float = option(2.0, "exponent of the transport cost", gt=0)


@dataclass(frozen=True)
class W2Ball(InnerSteps):
    """The W_2 attacks: the radius over the batch and the per-image cap."""

    delta: float | None = option(None, "W_2 radius in [0,1] pixel units (default: eps)")
    w2_budget_cap: float | None = option(
        None, "with --threat w2: no image's budget exceeds this (>= delta; default: max(eps, delta); none: "
              "uncapped, the paper's variant)")


@dataclass(frozen=True)
class W2Budget(W2Ball):
    """W-PGD-budget: per-sample budgets grown by their gradient."""

    w2_stop_flipped: bool = option(False, "with --threat w2: an image's budget stops growing once its prediction "
                                          "has flipped (budget goes to images not yet flipped)")


@dataclass(frozen=True)
class Ramp:
    """The eps warm-up wrapped around any inner maximiser."""

    eps_ramp: int = option(0, "eps warm-up: the inner radius and step grow linearly from 1/N to full over the first "
                              "N steps (default 0: none)", ge=0)


@dataclass(frozen=True)
class Precomputed:
    """Static sensitivity examples (Ovalle et al.'s Table 1): one FGSM example per training image against the
    starting model (or the weights of ``--precomputed-source``), made once, instead of an attack at every step."""

    inner_examples: str = option(
        "attack", "pointwise bases: attack (the inner attack at every step) or precomputed-fgsm (one FGSM example "
                  "per training image against the starting model or --precomputed-source, made once and stored in the "
                  "run folder)",
        choices_from="inner_examples")
    precomputed_eps: float | None = option(None, "radius of the precomputed FGSM examples (default: --eps)")
    precomputed_source: str | None = option(
        None, "weights file (same architecture) whose FGSM examples are stored, e.g. a cleanly trained model "
              "(default: the starting model)")


@dataclass(frozen=True)
class _InnerChoice:
    threat: str = option("pointwise", "pointwise eps-ball, or w2: W-DRO (W_2 ball of radius --delta over the batch)",
                         choices_from="threat")
    w2_inner: str = option("budget", "with --threat w2: the inner maximiser, budget (W-PGD-budget) or knapsack "
                                     "(radii from estimated distances to the boundary, allocated like the exact W_2 "
                                     "worst case)", choices_from="w2_inner")


@dataclass(frozen=True)
class InnerOptions(Precomputed, Ramp, W2Budget, SoftBall, _InnerChoice):
    """The inner maximiser's choice and the options of every inner maximiser."""


# ---------------------------------------------------------------- re-weightings (--reweight)
@dataclass(frozen=True)
class Armor:
    """Every ARMOR_D re-weighting."""

    armor_eps: float | None = option(None, "ARMOR_D divergence budget (default 0.02 KL, 0.5 alpha)")
    armor_t: float = option(0.5, "weight of clean CE mixed into the ARMOR_D loss", ge=0, le=1)
    armor_lr: float | None = option(None, "learning rate of learned ARMOR_D scalars (default: --lr); follows the "
                                          "schedule", gt=0)


@dataclass(frozen=True)
class ArmorKLOptions(Armor):
    armor_kappa: float = option(0.1, "armor-kl temperature floor")


@dataclass(frozen=True)
class ArmorAlphaOptions(Armor):
    armor_alpha: float = option(6.0, "armor-alpha divergence order > 1")


@dataclass(frozen=True)
class _ReweightChoice:
    reweight: str = option("none", "ARMOR_D re-weighting", choices_from="reweight")


@dataclass(frozen=True)
class ReweightOptions(ArmorAlphaOptions, ArmorKLOptions, _ReweightChoice):
    """The re-weighting and the options of every re-weighting."""


# ---------------------------------------------------------------- regularisers (--triplet)
@dataclass(frozen=True)
class Triplet:
    """The angular triplet regulariser (its sa / ia / sa+ia variants read the weights they use)."""

    triplet_margin: float = option(0.05, "triplet margin (TLA MNIST)")
    triplet_weight_sa: float = option(0.5, "weight of L_sa")
    triplet_weight_ia: float = option(0.5, "weight of L_ia")
    inv_cache: str = option("cache/invariance", "invariance cache folder (examples for L_ia, generated once, then "
                                                "reused)")
    triplet_norm_weight: float = option(1e-4, "feature-norm penalty weight")
    triplet_distance: str = option("abs-cosine", "angular distance: 1 - |cos| as in TLA (abs-cosine), or the signed "
                                                 "1 - cos", choices_from="triplet_distance")
    triplet_miner: str = option("nearest", "negatives: nearest different-class member of the pool (TLA), semi-hard "
                                           "(FaceNet: nearest farther than the positive), random",
                                  choices_from="triplet_miner")
    triplet_pool: int = option(1, "negative pool size in batches", gt=0)


@dataclass(frozen=True)
class _TripletChoice:
    triplet: str = option("none", "angular triplet regulariser: sa = sensitivity positives (the base's adversarial "
                                  "examples), ia = invariance positives (MNIST; generated once with the fast grid and "
                                  "cached in --inv-cache), sa+ia = both", choices_from="triplet")


@dataclass(frozen=True)
class RegularizerOptions(Triplet, _TripletChoice):
    """The regulariser and the options of every regulariser."""
