"""The parts of a training method, one registry per kind; each entry is a small class with its ``Options``
dataclass (declared in :mod:`wdro_finetune.config.parts`, so that the config and the command line are made from
them) and a ``build``. :func:`wdro_finetune.methods.factory.build_objective` composes one part of each kind.

- :data:`BASE_LOSSES` (``--method``): trades, mart, udr, pgd-at, fgsm-at, n-fgsm-at. Each declares as data the
  inner attack it takes (``attack``, an :data:`INNER_ATTACKS` name for ``--threat pointwise``), its ``start``
  and a fixed number of ``steps`` (None: ``--inner-steps``); UDR takes none (it has its own soft ball).
- :data:`THREATS` (``--threat``): which inner attack a base loss gets under that threat, and what it refuses.
- :data:`INNER_ATTACKS`: how each inner maximiser is built from the method's setting, as
  :class:`~wdro_finetune.attacks.base.Attack` objects: the pointwise ones are the attacks of
  :data:`~wdro_finetune.attacks.ATTACKS` (PGD, FGSM with random start, N-FGSM), then soft-ball transport,
  W-PGD-budget, W-PGD-knapsack, the stored examples of ``--inner-examples precomputed-fgsm``; the eps warm-up
  :class:`~wdro_finetune.attacks.ramp.RadiusRamp` wraps any of them.
- :data:`REWEIGHTINGS` (``--reweight``): none, armor-kl, armor-kl-learned, armor-alpha.
- :data:`REGULARIZERS` (``--triplet``): none, sa, ia, sa+ia (their miners: :data:`~.triplet.MINERS`).

:data:`PART_CHOICES` gives the config's part options (``choices_from``) their names from these registries.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from ..attacks.base import Attack
from ..attacks.budget_inner import WPGDBudget
from ..attacks.knapsack_inner import WPGDKnapsack
from ..attacks.pointwise import FGSM, PGD, NoiseFGSM
from ..attacks.stored import StoredExamples
from ..attacks.transport import SoftBallAttack, TransportCost
from ..config import parts as options
from ..errors import UserError
from ..registry import Registry, unknown_name_message
from .base import AdversarialCE, Mart, Trades, Udr
from .regularizers import TripletTerm
from .reweight import Aggregator, ArmorAlpha, ArmorKL, ArmorKLLearned, MeanAggregator
from .triplet import MINERS

BASE_LOSSES: Registry = Registry("method")
THREATS: Registry = Registry("threat")
INNER_ATTACKS: Registry = Registry("inner maximiser")
REWEIGHTINGS: Registry = Registry("re-weighting")
REGULARIZERS: Registry = Registry("regulariser")

_SOFT_BALL_CONFLICT = ("--armor-cost-weight (soft-ball transport) goes with --threat pointwise and a base other than "
                       "udr (UDR has its own soft ball)")


class Part:
    """A registry entry: ``Options`` (a frozen dataclass of flat option names) and ``build``."""

    Options: type = options.NoOptions

    @classmethod
    def options(cls, cfg: Any) -> Any:
        """This part's options, read from a config by their flat names (``cfg.beta``, ...)."""
        return cls.Options(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(cls.Options)})

    @classmethod
    def check(cls, cfg: Any) -> None:
        """UserError where this part cannot go with the rest of ``cfg`` (default: it goes with anything)."""


@dataclass(frozen=True)
class Setting:
    """What an inner maximiser takes from the rest of the method: the pointwise radius ``eps`` (pixel units of
    [0, 1]), the norm ('Linf' | 'L2'), the number of steps and the start of PGD; ``examples``: the stored
    sensitivity examples (N_train, C, H, W) of ``--inner-examples precomputed-fgsm``."""

    eps: float
    norm: str
    steps: int
    start: str
    examples: torch.Tensor | None = None


# ---------------------------------------------------------------- base losses
class _BaseLoss(Part):
    attack: str | None = "pgd"  # the pointwise inner attack; None: the base makes its own examples
    start = "normal"  # TRADES start x + 0.001 N(0, 1)
    steps: int | None = None  # None: --inner-steps


@BASE_LOSSES.register("trades")
class _Trades(_BaseLoss):
    Options = options.KLWeight

    @staticmethod
    def build(opts: options.KLWeight, name: str, setting: Setting, attack: Attack) -> Trades:
        return Trades(attack, beta=opts.beta)


@BASE_LOSSES.register("mart")
class _Mart(_Trades):
    @staticmethod
    def build(opts: options.KLWeight, name: str, setting: Setting, attack: Attack) -> Mart:
        return Mart(attack, beta=opts.beta)


@BASE_LOSSES.register("pgd-at")
class _PgdAT(_BaseLoss):
    start = "uniform"

    @staticmethod
    def build(opts: Any, name: str, setting: Setting, attack: Attack) -> AdversarialCE:
        return AdversarialCE(attack, name)


@BASE_LOSSES.register("fgsm-at")
class _FgsmAT(_PgdAT):
    attack, steps = "fgsm", 1  # FGSM with random start: 1 step of 1.25 eps (FGSM.with_random_start)


@BASE_LOSSES.register("n-fgsm-at")
class _NoiseFgsmAT(_PgdAT):
    attack, steps = "n-fgsm", 1


@BASE_LOSSES.register("udr")
class _Udr(_BaseLoss):
    Options = options.PointwiseStep
    attack = None

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.threat != "pointwise" or cfg.threat_model.value != "Linf":
            raise UserError("--method udr supports --threat pointwise with --threat-model Linf")
        if cfg.eps_ramp:
            raise UserError("--eps-ramp is not available with --method udr (its adaptive cost weight assumes a "
                            "fixed eps)")
        if cfg.armor_cost_weight:
            raise UserError(_SOFT_BALL_CONFLICT)

    @staticmethod
    def build(opts: options.PointwiseStep, name: str, setting: Setting, attack: None) -> Udr:
        return Udr(setting.eps, steps=setting.steps, step_size=opts.inner_step_size)


# ---------------------------------------------------------------- threats: which inner attack
@THREATS.register("pointwise")
class _Pointwise(Part):
    @staticmethod
    def inner(cfg: Any, base: type[_BaseLoss]) -> str:
        """The base's own pointwise attack, the soft ball when the attacker pays a transport cost, or the stored
        examples of --inner-examples precomputed-fgsm."""
        if cfg.inner_examples != "attack":
            return cfg.inner_examples
        return "soft-ball" if cfg.armor_cost_weight else base.attack


@THREATS.register("w2")
class _W2(Part):
    @staticmethod
    def inner(cfg: Any, base: type[_BaseLoss]) -> str:
        return cfg.w2_inner

    @classmethod
    def check(cls, cfg: Any) -> None:
        if cfg.inner_step_size is not None:
            raise UserError("--inner-step-size sets the pointwise attacks' step; W_2 maximisers have their own")
        if cfg.armor_cost_weight:
            raise UserError(_SOFT_BALL_CONFLICT)


# ---------------------------------------------------------------- inner maximisers
class _Inner(Part):
    @staticmethod
    def cost(opts: Any) -> TransportCost | None:
        """The transport cost the objective subtracts from the per-sample losses (None: a hard ball)."""
        return None


@INNER_ATTACKS.register("pgd")
class _PGD(_Inner):
    Options = options.PointwiseStep

    @staticmethod
    def build(opts: options.PointwiseStep, s: Setting) -> Attack:
        return PGD(eps=s.eps, norm=s.norm, steps=s.steps, step_size=opts.inner_step_size, start=s.start)


@INNER_ATTACKS.register("fgsm")
class _FGSM(_PGD):
    @staticmethod
    def build(opts: options.PointwiseStep, s: Setting) -> Attack:
        return FGSM.with_random_start(s.eps, s.norm, opts.inner_step_size)


@INNER_ATTACKS.register("n-fgsm")
class _NoiseFGSM(_PGD):
    @staticmethod
    def build(opts: options.PointwiseStep, s: Setting) -> Attack:
        return NoiseFGSM(eps=s.eps, norm=s.norm, step_size=opts.inner_step_size)


@INNER_ATTACKS.register("precomputed-fgsm")
class _PrecomputedFGSM(_Inner):
    Options = options.Precomputed

    @staticmethod
    def build(opts: options.Precomputed, s: Setting) -> Attack:
        if s.examples is None:
            raise UserError("--inner-examples precomputed-fgsm needs the stored examples of the training images")
        return StoredExamples(s.examples, opts.precomputed_eps, s.norm)


@INNER_ATTACKS.register("soft-ball")
class _SoftBall(_Inner):
    Options = options.SoftBall

    @staticmethod
    def cost(opts: options.SoftBall) -> TransportCost:
        return TransportCost(opts.armor_cost_weight, opts.armor_cost_p, opts.armor_cost_q)

    @classmethod
    def build(cls, opts: options.SoftBall, s: Setting) -> Attack:
        return SoftBallAttack(s.eps, cls.cost(opts), s.norm, s.steps, opts.inner_step_size)


@INNER_ATTACKS.register("budget")
class _WPGDBudget(_Inner):
    Options = options.W2Budget

    @staticmethod
    def build(opts: options.W2Budget, s: Setting) -> Attack:
        return WPGDBudget(delta=opts.delta, norm=s.norm, steps=s.steps, budget_cap=opts.w2_budget_cap,
                          stop_flipped=opts.w2_stop_flipped)


@INNER_ATTACKS.register("knapsack")
class _WPGDKnapsack(_Inner):
    Options = options.W2Ball

    @staticmethod
    def build(opts: options.W2Ball, s: Setting) -> Attack:
        return WPGDKnapsack(delta=opts.delta, norm=s.norm, steps=s.steps, budget_cap=opts.w2_budget_cap)


# ---------------------------------------------------------------- re-weightings
@REWEIGHTINGS.register("none")
class _Mean(Part):
    aggregator = MeanAggregator

    @staticmethod
    def mix(opts: Any) -> float:
        """t, the weight of the clean CE mixed into the loss (0: none)."""
        return 0.0

    @classmethod
    def build(cls, opts: Any) -> Aggregator:
        return cls.aggregator()


class _Armor(Part):
    Options = options.Armor
    default_eps = 0.02  # ARMOR_D divergence budget when --armor-eps is not given (the authors' TRADES value)

    @staticmethod
    def mix(opts: options.Armor) -> float:
        return opts.armor_t

    @classmethod
    def build(cls, opts: options.Armor) -> Aggregator:
        return cls.aggregator(**cls.arguments(opts, cls.default_eps if opts.armor_eps is None else opts.armor_eps))


@REWEIGHTINGS.register("armor-kl")
class _ArmorKL(_Armor):
    Options, aggregator = options.ArmorKLOptions, ArmorKL

    @staticmethod
    def arguments(opts: options.ArmorKLOptions, eps: float) -> dict:
        return {"eps": eps, "kappa": opts.armor_kappa}


@REWEIGHTINGS.register("armor-kl-learned")
class _ArmorKLLearned(_Armor):
    aggregator = ArmorKLLearned

    @staticmethod
    def arguments(opts: options.Armor, eps: float) -> dict:
        return {"eps": eps}


@REWEIGHTINGS.register("armor-alpha")
class _ArmorAlpha(_Armor):
    Options, aggregator, default_eps = options.ArmorAlphaOptions, ArmorAlpha, 0.5

    @staticmethod
    def arguments(opts: options.ArmorAlphaOptions, eps: float) -> dict:
        return {"eps": eps, "alpha": opts.armor_alpha}


def make_aggregator(name: str, **params: Any) -> Aggregator:
    """The aggregator of re-weighting ``name`` from its constructor arguments (e.g. ``eps=0.02, kappa=0.1``)."""
    if name not in REWEIGHTINGS:
        raise ValueError(unknown_name_message("aggregator", name, REWEIGHTINGS.names()))
    return REWEIGHTINGS.get(name).aggregator(**params)


# ---------------------------------------------------------------- regularisers
@REGULARIZERS.register("none")
class _NoRegularizer(Part):
    terms: tuple[str, ...] = ()  # the triplet terms: sa (sensitivity positives), ia (invariance positives)

    @classmethod
    def needs_positives(cls) -> bool:
        """Whether the part needs the invariance examples of the training images."""
        return "ia" in cls.terms

    @staticmethod
    def build(opts: Any, seed: int, inv_positives: torch.Tensor | None) -> TripletTerm | None:
        return None


@REGULARIZERS.register("sa")
class _TripletSA(_NoRegularizer):
    Options, terms = options.Triplet, ("sa",)

    @classmethod
    def build(cls, opts: options.Triplet, seed: int, inv_positives: torch.Tensor | None) -> TripletTerm:
        weight_sa = opts.triplet_weight_sa if "sa" in cls.terms else 0.0
        weight_ia = opts.triplet_weight_ia if cls.needs_positives() else 0.0
        if weight_ia and inv_positives is None:
            raise UserError(f"--triplet {'+'.join(cls.terms)} needs the invariance examples of the training images")
        return TripletTerm(weight_sa, opts.triplet_norm_weight, opts.triplet_margin, opts.triplet_miner,
                           opts.triplet_pool, signed=SIGNED_DISTANCE[opts.triplet_distance], seed=seed,
                           weight_ia=weight_ia, inv_positives=inv_positives if weight_ia else None)


@REGULARIZERS.register("ia")
class _TripletIA(_TripletSA):
    terms = ("ia",)


@REGULARIZERS.register("sa+ia")
class _TripletBoth(_TripletSA):
    terms = ("sa", "ia")


SIGNED_DISTANCE = {"abs-cosine": False, "cosine": True}  # --triplet-distance: 1 - |cos| or the signed 1 - cos


def _stored_inners() -> tuple[str, ...]:
    """The stored-example inner maximisers (``--inner-examples``; ``attack``: none, the base's own attack)."""
    return tuple(n for n in INNER_ATTACKS.names() if INNER_ATTACKS.get(n).Options is options.Precomputed)


def _w2_inners() -> tuple[str, ...]:
    """The inner maximisers of ``--threat w2`` (``--w2-inner``): those with the W_2 ball's options."""
    return tuple(n for n in INNER_ATTACKS.names() if issubclass(INNER_ATTACKS.get(n).Options, options.W2Ball))


# The names each part choice of the config may take (``option(..., choices_from=<key>)`` in config/parts.py):
# the registries' names, written once, above; the command line, --help and the checks read them from here.
PART_CHOICES: dict[str, tuple[str, ...]] = {
    "method": tuple(BASE_LOSSES.names()), "threat": tuple(THREATS.names()), "w2_inner": _w2_inners(),
    "reweight": tuple(REWEIGHTINGS.names()), "triplet": tuple(REGULARIZERS.names()),
    "triplet_miner": tuple(MINERS.names()), "triplet_distance": tuple(SIGNED_DISTANCE),
    "inner_examples": ("attack",) + _stored_inners()}
