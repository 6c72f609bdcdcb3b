"""Minimal adversarial distances: per example, the smallest VERIFIED perturbation that flips the prediction.

An ensemble of minimal-norm attacks runs on the correctly classified points of a batch; each candidate
counts only after verification (the candidate is re-classified by the model in eval mode, float32, and
its exact distance ||x_adv - x|| is measured in float64); the minimum over attacks is kept per example.

- ``fmn``: Fast Minimum-Norm (Pintor, Roli, Brendel & Biggio, NeurIPS 2021), adv-lib's implementation,
  untargeted, cosine-annealed step and radius. For l_inf the step ``alpha_init`` scales with sqrt(D)
  (a normalised-gradient step that the l_inf projection then clips: about a sign step on every pixel).
- ``fab-t``: targeted FAB (Croce & Hein, ICML 2020), pyautoattack's implementation, against the top
  ``fab_targets`` other classes of the clean logits.
- ``refine``: a bisection from above around the best candidate: margin-loss PGD at radius r = d * (1 - gamma)
  (shrinking again after a success, halving the gap towards the verified d after a failure), started
  alternately from the candidate (projected into the smaller ball) and from a uniform random point of
  the ball (which finds what the warm start misses: measured on a plain CNN, benchmarks/RESULTS.md).
  It only ever lowers a verified distance.

Shapes: x (N, C, H, W) float32 in [0, 1], y (N,) int64. Distances in pixel units of [0, 1] under
``norm`` ('Linf' | 'L2'): 0 for misclassified points, inf where no attack found an adversarial example.
FMN and FAB-T are deterministic; the refinement's random starts come from a generator seeded with
``seed`` per call, so equal batches give equal distances.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from ._mode import eval_mode, frozen_parameters
from .pointwise import ascent_direction, check_norm, per_sample_norm, per_sample_view, project_to_ball

log = logging.getLogger(__name__)

ATTACKS = ("fmn", "fab-t", "refine")
CLEAN = "clean"  # the attack label of a point that is misclassified without any perturbation
NONE = "none"  # no attack found an adversarial example


@dataclass(frozen=True)
class DistanceSettings:
    """The ensemble and its budgets (gradient steps per point: fmn_steps + fab_steps * fab_targets
    + refine_rounds * refine_steps)."""

    norm: str = "Linf"
    attacks: tuple[str, ...] = ATTACKS
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
    unknown = [a for a in settings.attacks if a not in ATTACKS]
    if unknown:
        raise ValueError(f"unknown distance attack(s) {unknown}; choose from {ATTACKS}")
    x, y = x.detach().float(), y.detach()
    with eval_mode(model), frozen_parameters(model):
        correct = _predict(model, x) == y
        best = _Best(x, correct)
        idx = correct.nonzero().flatten()
        if idx.numel():
            xc, yc = x[idx], y[idx]
            for name in settings.attacks:
                if name == "refine":
                    continue
                for candidates in _ATTACK_FUNCTIONS[name](model, xc, yc, settings, norm):
                    best.offer(idx, candidates, verified_distance(model, xc, yc, candidates, norm), name)
            if "refine" in settings.attacks:
                _refine(model, xc, yc, idx, best, settings, norm)
        final = verified_distance(model, x, y, best.x_adv, norm)  # the reported distances: one last check
    distance = torch.where(correct, final, torch.zeros_like(final))
    attack = [CLEAN if not c else (best.attack[i] if math.isfinite(d) else NONE)
              for i, (c, d) in enumerate(zip(correct.tolist(), distance.tolist()))]
    return MinimalDistances(distance, best.x_adv, attack)


def verified_distance(model: nn.Module, x: torch.Tensor, y: torch.Tensor, x_adv: torch.Tensor,
                      norm: str) -> torch.Tensor:
    """||x_adv - x|| (N,) float64 where the model (eval mode, float32) misclassifies x_adv and x_adv lies
    in [0, 1]; inf elsewhere."""
    x_adv = x_adv.detach().float()
    with eval_mode(model):
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
    return model(x).argmax(1)


def _fmn(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: DistanceSettings, norm: str) -> list[torch.Tensor]:
    with warnings.catch_warnings():  # adv-lib's own distutils deprecation notice, printed at import
        warnings.simplefilter("ignore", DeprecationWarning)
        from adv_lib.attacks import fmn

    order = math.inf if norm == "Linf" else 2
    alpha = 4.0 * math.sqrt(x[0].numel()) if norm == "Linf" else 1.0
    return [fmn(model, x, y, norm=order, steps=s.fmn_steps, α_init=alpha).detach()]


def _fab_t(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: DistanceSettings, norm: str):
    """One candidate batch per target class (the k-th largest clean logit, k = 2 .. fab_targets + 1)."""
    from pyautoattack.fab_pt import FABAttack_PT

    fab = FABAttack_PT(model, norm=norm, n_iter=s.fab_steps, targeted=True, device=x.device, seed=0)
    for k in range(2, 2 + s.fab_targets):
        fab.target_class = k
        yield fab.attack_single_run(x, y, use_rand_start=False, is_targeted=True).detach()


def _refine(model: nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor, best: _Best,
            s: DistanceSettings, norm: str) -> None:
    """Shrink each verified distance by warm-started margin PGD at radii below it (see the module docstring)."""
    hi = best.distance[idx].clone()
    found = torch.isfinite(hi)
    lo = torch.where(found, hi * (1 - s.refine_gamma), torch.zeros_like(hi))
    generator = torch.Generator(device=x.device).manual_seed(s.seed)
    for k in range(s.refine_rounds):
        if not found.any():
            return
        rows = found.nonzero().flatten()
        start = best.x_adv[idx[rows]] if k % 2 == 0 else _uniform_in_ball(x[rows], lo[rows].float(), norm, generator)
        candidates = _margin_pgd(model, x[rows], y[rows], start, lo[rows].float(), s.refine_steps, norm)
        d = verified_distance(model, x[rows], y[rows], candidates, norm)
        success = d < hi[rows]
        best.offer(idx[rows], candidates, d, "refine")
        hi[rows] = torch.minimum(hi[rows], d)
        lo[rows] = torch.where(success, hi[rows] * (1 - s.refine_gamma), (lo[rows] + hi[rows]) / 2)


def _margin_pgd(model: nn.Module, x0: torch.Tensor, y: torch.Tensor, start: torch.Tensor, radius: torch.Tensor,
                steps: int, norm: str) -> torch.Tensor:
    """PGD lowering the margin z_y - max_{k != y} z_k inside per-sample balls of ``radius`` (N,), from
    ``start`` projected into them. Returns, per sample, the first iterate that was misclassified (else
    the last one)."""
    x_adv = project_to_ball(start, x0, radius, norm).clamp(0, 1)
    step = per_sample_view(2.5 * radius / steps, x0)
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


_ATTACK_FUNCTIONS = {"fmn": _fmn, "fab-t": _fab_t}
