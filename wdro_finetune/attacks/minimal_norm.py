"""Minimal adversarial distances: per example, the smallest VERIFIED perturbation that flips the prediction.

An ensemble of minimal-norm attacks runs on the correctly classified points of a batch; each candidate
counts only after verification (the candidate is re-classified by the model in eval mode, float32, and
its exact distance ||x_adv - x|| is measured in float64); the minimum over attacks is kept per example.

- ``fmn`` (:class:`FMN`): Fast Minimum-Norm (Pintor, Roli, Brendel & Biggio, NeurIPS 2021), adv-lib's implementation,
  untargeted, cosine-annealed step and radius. For l_inf the step ``alpha_init`` scales with sqrt(D)
  (a normalised-gradient step that the l_inf projection then clips: about a sign step on every pixel).
- ``fab-t`` (:class:`FABT`): targeted FAB (Croce & Hein, ICML 2020), pyautoattack's implementation, against the top
  ``fab_targets`` other classes of the clean logits.
- ``refine`` (:class:`Refine`): a bisection from above around the best candidate: margin-loss PGD at radius
  r = d * (1 - gamma) (shrinking again after a success, halving the gap towards the verified d after a failure), started
  alternately from the candidate (projected into the smaller ball) and from a uniform random point of
  the ball (which finds what the warm start misses: measured on a plain CNN, benchmarks/RESULTS.md).
  It only ever lowers a verified distance.

Each attack follows the :class:`~.base.Attack` contract (eval mode and frozen parameters in its call only);
:func:`minimal_distances` runs the ensemble. Shapes: x (N, C, H, W) float32 in [0, 1], y (N,) int64.
Distances in pixel units of [0, 1] under ``norm`` ('Linf' | 'L2'): 0 for misclassified points, inf where no
attack found an adversarial example. FMN and FAB-T are deterministic; the refinement's random starts come from a generator seeded with
``seed`` per call, so equal batches give equal distances.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ..config.options import option
from ._mode import eval_mode
from .base import Attack
from .configured import ConfiguredAttack, call_with_output
from .pointwise import (NORMS, ascent_direction, check_norm, default_step, per_sample_norm, per_sample_view,
                        project_to_ball)

log = logging.getLogger(__name__)

ENSEMBLE = ("fmn", "fab-t", "refine")  # the attacks of the ensemble
CLEAN = "clean"  # the attack label of a point that is misclassified without any perturbation
NONE = "none"  # no attack found an adversarial example


@dataclass(frozen=True)
class DistanceSettings:
    """The ensemble and its budgets (gradient steps per point: fmn_steps + fab_steps * fab_targets
    + refine_rounds * refine_steps)."""

    norm: str = "Linf"
    attacks: tuple[str, ...] = ENSEMBLE
    fmn_steps: int = 100
    fab_steps: int = 20
    fab_targets: int = 1
    refine_rounds: int = 5
    refine_steps: int = 6
    refine_gamma: float = 0.1
    seed: int = 0


@dataclass(frozen=True)
class MinimalDistances:
    """``distance`` (N,) float64; ``x_adv`` (N, C, H, W) the verified example of each finite distance (x itself
    elsewhere); ``attack`` per example: the attack whose candidate is reported, ``clean`` or ``none``."""

    distance: torch.Tensor
    x_adv: torch.Tensor
    attack: list[str]


def minimal_distances(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      settings: DistanceSettings = DistanceSettings()) -> MinimalDistances:
    """Run the ensemble of ``settings`` on one batch (every tensor on the model's device)."""
    norm = check_norm(settings.norm)
    unknown = [a for a in settings.attacks if a not in ENSEMBLE]
    if unknown:
        raise ValueError(f"unknown distance attack(s) {unknown}; choose from {ENSEMBLE}")
    x, y = x.detach().float(), y.detach()
    correct = _predict(model, x) == y
    best = _Best(x, correct)
    idx = correct.nonzero().flatten()
    if idx.numel():
        xc, yc = x[idx], y[idx]
        for name, attack in candidate_attacks(settings):
            candidates = attack(model, xc, yc)
            best.offer(idx, candidates, verified_distance(model, xc, yc, candidates, norm), name)
        if "refine" in settings.attacks:
            refine = Refine(norm=norm, rounds=settings.refine_rounds, steps=settings.refine_steps,
                            gamma=settings.refine_gamma, seed=settings.seed)
            best.offer(idx, *refine.improve(model, xc, yc, best.x_adv[idx], best.distance[idx]), "refine")
    final = verified_distance(model, x, y, best.x_adv, norm)  # the reported distances: one last check
    distance = torch.where(correct, final, torch.zeros_like(final))
    attack = [CLEAN if not c else (best.attack[i] if math.isfinite(d) else NONE)
              for i, (c, d) in enumerate(zip(correct.tolist(), distance.tolist()))]
    return MinimalDistances(distance, best.x_adv, attack)


def candidate_attacks(settings: DistanceSettings) -> list[tuple[str, Attack]]:
    """The ensemble's candidate attacks in the order of ``settings.attacks`` (FAB-T: one per target class;
    ``refine`` improves the others' candidates, so it makes none of its own)."""
    return [(name, attack) for name in settings.attacks for attack in _CANDIDATES.get(name, _none)(settings)]


def _none(settings: DistanceSettings) -> list[Attack]:
    return []


_CANDIDATES = {
    "fmn": lambda s: [FMN(norm=s.norm, steps=s.fmn_steps)],
    "fab-t": lambda s: [FABT(norm=s.norm, steps=s.fab_steps, target=k) for k in range(2, 2 + s.fab_targets)],
}


def verified_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                      norm: str) -> torch.Tensor:
    """||x_adv - x|| (N,) float64 where the model (eval mode, float32) misclassifies x_adv and x_adv lies
    in [0, 1]; inf elsewhere."""
    x_adv = x_adv.detach().float()
    wrong = _predict(model, x_adv) != y
    inside = (x_adv >= 0).flatten(1).all(1) & (x_adv <= 1).flatten(1).all(1)
    d = per_sample_norm(x_adv.double() - x.double(), norm)
    return torch.where(wrong & inside, d, torch.full_like(d, math.inf))


class _Best:
    """The smallest verified candidate per example so far."""

    def __init__(self, x: torch.Tensor, correct: torch.Tensor):
        self.x_adv = x.clone()
        self.distance = torch.where(correct, torch.full(correct.shape, math.inf, dtype=torch.float64,
                                                        device=correct.device), 0.0)
        self.attack = [NONE] * len(x)

    def offer(self, idx: torch.Tensor, candidates: torch.Tensor, distance: torch.Tensor, name: str) -> None:
        better = distance < self.distance[idx]
        rows = idx[better]
        self.x_adv[rows] = candidates[better].to(self.x_adv.dtype)
        self.distance[rows] = distance[better]
        for i in rows.tolist():
            self.attack[i] = name


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Predicted classes (N,) with the model in eval mode."""
    with eval_mode(model):
        return model(x).argmax(1)


@dataclass(frozen=True)
class FMNOptions:
    norm: str = option("Linf", "norm of the distance", choices=NORMS)
    steps: int = option(100, "FMN steps")


class FMN(ConfiguredAttack):
    """Fast Minimum-Norm (Pintor, Roli, Brendel & Biggio, NeurIPS 2021), adv-lib's implementation: untargeted,
    cosine-annealed step and radius; for l_inf the step ``alpha_init`` is 4 sqrt(D). Deterministic; minimises its
    own margin objective (``loss`` is not used)."""

    Options = FMNOptions

    def perturb(self, model, x, y, loss, generator):
        with warnings.catch_warnings():  # adv-lib's own distutils deprecation notice, printed at import
            warnings.simplefilter("ignore", DeprecationWarning)
            from adv_lib.attacks import fmn

        norm = check_norm(self.options.norm)
        order = math.inf if norm == "Linf" else 2
        alpha = 4.0 * math.sqrt(x[0].numel()) if norm == "Linf" else 1.0
        return fmn(model, x, y, norm=order, steps=self.options.steps, α_init=alpha)


@dataclass(frozen=True)
class FABTOptions:
    norm: str = option("Linf", "norm of the distance", choices=NORMS)
    steps: int = option(20, "FAB iterations")
    target: int = option(2, "target: the k-th largest clean logit (2: the runner-up)")


class FABT(ConfiguredAttack):
    """Targeted FAB (Croce & Hein, ICML 2020), pyautoattack's implementation, towards the class of the
    ``target``-th largest clean logit; deterministic (no random start; ``loss`` is not used)."""

    Options = FABTOptions

    def perturb(self, model, x, y, loss, generator):
        from pyautoattack.fab_pt import FABAttack_PT

        o = self.options
        fab = FABAttack_PT(model, norm=check_norm(o.norm), n_iter=o.steps, targeted=True, device=x.device, seed=0)
        fab.target_class = o.target
        return fab.attack_single_run(x, y, use_rand_start=False, is_targeted=True)


@dataclass(frozen=True)
class RefineOptions:
    norm: str = option("Linf", "norm of the distance", choices=NORMS)
    rounds: int = option(5, "bisection rounds")
    steps: int = option(6, "margin-PGD steps per round")
    gamma: float = option(0.1, "first radius: the verified distance times (1 - gamma)")
    seed: int = option(0, "seed of the random starts (a generator of its own per call)")


class Refine(ConfiguredAttack):
    """Bisection from above around a verified candidate (see the module docstring): margin-loss PGD at radii below
    its distance, warm-started (even rounds) or from a uniform random point of the ball (odd rounds). Called as an
    attack it refines FMN's candidate; :meth:`improve` refines given ones. ``loss`` is not used (margin loss)."""

    Options = RefineOptions

    def improve(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_start: torch.Tensor,
                d_start: torch.Tensor, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_adv, distance (N,) float64): the best verified candidates from ``x_start`` whose verified distances
        are ``d_start`` (inf: none); a distance only ever goes down."""
        def attack(model, x, y, loss, generator):
            out = self._refine(model, x, y, x_start, d_start, generator)
            return out[0], out

        return call_with_output(attack, model, x, y, self.loss, generator)

    def perturb(self, model, x, y, loss, generator):
        norm = check_norm(self.options.norm)
        start = FMN(norm=norm)(model, x, y)
        return self._refine(model, x, y, start, verified_distance(model, x, y, start, norm), generator)[0]

    def _refine(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_start: torch.Tensor,
                d_start: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        s, norm = self.options, check_norm(self.options.norm)
        x_best, hi = x_start.detach().clone().to(x.dtype), d_start.clone()
        found = torch.isfinite(hi)
        lo = torch.where(found, hi * (1 - s.gamma), torch.zeros_like(hi))
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(s.seed)
        for k in range(s.rounds):
            if not found.any():
                break
            rows = found.nonzero().flatten()
            start = x_best[rows] if k % 2 == 0 else _uniform_in_ball(x[rows], lo[rows].float(), norm, generator)
            candidates = _margin_pgd(model, x[rows], y[rows], start, lo[rows].float(), s.steps, norm)
            d = verified_distance(model, x[rows], y[rows], candidates, norm)
            success = d < hi[rows]
            x_best[rows[success]] = candidates[success].to(x_best.dtype)
            hi[rows] = torch.minimum(hi[rows], d)
            lo[rows] = torch.where(success, hi[rows] * (1 - s.gamma), (lo[rows] + hi[rows]) / 2)
        return x_best, hi


def _margin_pgd(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, start: torch.Tensor, radius: torch.Tensor,
                steps: int, norm: str) -> torch.Tensor:
    """PGD lowering the margin z_y - max_{k != y} z_k inside per-sample balls of ``radius`` (N,), from
    ``start`` projected into them. Returns, per sample, the first iterate that was misclassified (else
    the last one)."""
    x_adv = project_to_ball(start, x0, radius, norm).clamp(0, 1)
    step = per_sample_view(default_step(radius, steps), x0)
    kept, done = x_adv.clone(), torch.zeros(len(y), dtype=torch.bool, device=x0.device)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        with torch.enable_grad():
            m = _margin(model(x_adv), y)
            (grad,) = torch.autograd.grad(m.sum(), x_adv)
        new = (m.detach() < 0) & ~done
        kept[new], done = x_adv.detach()[new], done | new
        if done.all():
            return kept
        x_adv = project_to_ball(x_adv.detach() - step * ascent_direction(grad, norm), x0, radius, norm).clamp(0, 1)
    return torch.where(per_sample_view(done, x0), kept, x_adv)


def _uniform_in_ball(x0: torch.Tensor, radius: torch.Tensor, norm: str, generator: torch.Generator) -> torch.Tensor:
    """A uniform random point of each sample's l_inf ball (for l_2: a random direction at a uniform radius
    fraction), clipped to [0, 1]."""
    noise = torch.rand(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype) * 2 - 1
    if norm == "L2":
        noise = noise / per_sample_view(per_sample_norm(noise, "L2").clamp_min(1e-12), noise)
        noise = noise * per_sample_view(torch.rand(len(x0), generator=generator, device=x0.device, dtype=x0.dtype), noise)
    return (x0 + noise * per_sample_view(radius, x0)).clamp(0, 1)


def _margin(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """z_y - max_{k != y} z_k per sample (N,): negative iff misclassified."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], -math.inf).amax(1)
    return true - other

