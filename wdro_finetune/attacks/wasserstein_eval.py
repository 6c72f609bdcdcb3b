"""Distributional (Wasserstein) attacks of Bai, He, Jiang & Obloj (NeurIPS 2023, and 2025 for training).

Threat model: the attacked data set X may be any set with W_p(X, X0) <= delta, where labels never
move and the ground cost between images is ||x - x'||_r (r = inf: 'Linf', r = 2: 'L2'). For p = 2
only the dataset-wide root mean square of per-sample perturbation norms is bounded,

    dist(X, X0) = sqrt(mean_i ||X_i - X0_i||_r^2) <= delta,

so the attacker spends more budget on vulnerable points; p = inf is the usual pointwise threat.

- :class:`WPGD` (``w_pgd``: its full result): evaluation attack over a WHOLE data set (W-PGD;
  ``attack='fgsm'`` gives W-FGSM). The data stay where they are (normally the CPU); batches go to
  ``device`` one at a time; the direction normaliser and the projection use dataset-wide sums (and
  sums over ranks under torch.distributed).
- ``w_pgd_budget`` (:mod:`.wasserstein_budget`): the training inner maximiser over one (global) batch.

Shapes: x (N, C, H, W) float32 in [0, 1]; y (N,) int64; model(x) -> logits (N, K). delta is in
pixel units of [0, 1].
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..distributed import global_max, global_sums
from ..config.options import option
from .configured import ConfiguredAttack, call_with_output
from .losses import LOSS_NAMES, AttackLoss, LossSpec, get_attack_loss
from .pointwise import (NORMS, ascent_direction, check_norm, input_gradient, per_sample_norm, project_to_ball,
                        per_sample_view)

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
KINDS = ("pgd", "fgsm")  # W-PGD, W-FGSM
_STEP_FACTOR = 1.875  # eta = 1.875 * delta / T (Bai et al. 2023)


@dataclass(frozen=True)
class WAttackResult:
    """Outcome of ``w_pgd`` (scalars are over the whole data set, all ranks together).

    correct: (N_local,) bool, per-example correctness at the iterate with the lowest accuracy.
    x_adv: (N_local, C, H, W) that iterate, on the device of the input x.
    accuracy: its accuracy in [0, 1]; worst_iterate: its index (0 = clean input).
    max_loss: highest mean attack loss over iterates 0..T.
    distance: achieved W_p distance of that iterate to X0 (p = 2: RMS of ||.||_r; p = inf: max).
    accuracy_per_iterate, loss_per_iterate: length T + 1, iterate 0 is the clean input.
    n: number of examples over all ranks.
    """

    correct: torch.Tensor
    x_adv: torch.Tensor
    accuracy: float
    worst_iterate: int
    max_loss: float
    distance: float
    accuracy_per_iterate: tuple[float, ...]
    loss_per_iterate: tuple[float, ...]
    n: int


def w_pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, delta: float, p: float = 2,
          norm: str = "Linf", steps: int = 50, loss: LossSpec = "ce", attack: str = "pgd",
          batch_size: int = 256, device: torch.device | str = "cpu",
          progress: Progress | None = None) -> WAttackResult:
    """The full result of :class:`WPGD` with these options (``loss``: 'ce' | 'dlr' | 'redlr' | callable
    (logits, y) -> (N,)); ``progress(step, total)`` is called after each step."""
    wpgd = WPGD(delta=delta, p=p, norm=norm, steps=steps, attack=attack, batch_size=batch_size, device=device)
    return wpgd.run(model, x, y, loss=get_attack_loss(loss), progress=progress)


@dataclass(frozen=True)
class WPGDOptions:
    delta: float = option(1 / 510, "W_p budget in pixel units of [0, 1]")
    p: float = option(2.0, "Wasserstein order: 2 (W_2) or inf (W_inf, pointwise)")
    norm: str = option("Linf", "ground norm ||x - x'||_r between images", choices=NORMS)
    steps: int = option(50, "W-PGD steps T (W-FGSM: one step)")
    loss: str = option("ce", "attack loss", choices=LOSS_NAMES)
    attack: str = option("pgd", "W-PGD or W-FGSM", choices=KINDS)
    batch_size: int = option(256, "examples per forward / backward pass")
    device: str = option("cpu", "device the batches go to (the data stay where they are)")


class WPGD(ConfiguredAttack):
    """W-PGD (``attack='pgd'``, T = ``steps``, eta = 1.875 delta / T) or W-FGSM (one step, eta = delta) over a
    WHOLE data set (Bai, He, Jiang & Obloj, NeurIPS 2023).

    Per step: g_i = grad of loss_i; dir_i = sign(g_i) |g_i|^(s-1) ||g_i||_s^(q-s) (s = 1 for
    'Linf', 2 for 'L2'; q = 2 for p = 2, q = 1 for p = inf); for q = 2 all directions are divided
    by sqrt(mean_j ||dir_j||_r^2); X <- clip_[0,1](proj(X + eta dir)). No random start. With p = inf
    this is pointwise PGD with step eta (same iterates as ``pgd``, ``random_start=False``).
    Calling it returns the iterate with the lowest accuracy; :meth:`run` returns the whole
    :class:`WAttackResult`. Cost: T forward+backward passes and one forward pass over the set.
    """

    Options = WPGDOptions

    def __init__(self, options: WPGDOptions | None = None, **values):
        super().__init__(options, **values)
        self.loss = get_attack_loss(self.options.loss)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, loss: AttackLoss | None = None,
            progress: Progress | None = None) -> WAttackResult:
        """The full result (accuracy, loss and distance per iterate; the worst iterate and its flags)."""
        def attack(model, x, y, loss, generator):
            result = self._attack(model, x, y, loss, progress)
            return result.x_adv, result

        return call_with_output(attack, model, x, y, loss or self.loss)

    def perturb(self, model, x, y, loss, generator):
        return self._attack(model, x, y, loss, None).x_adv

    def _attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: AttackLoss,
                progress: Progress | None) -> WAttackResult:
        o = self.options
        plan = _Plan.build(o.delta, o.p, check_norm(o.norm), o.steps, o.attack)
        x0 = x.detach()
        x_adv = x0.clone()
        direction = torch.empty_like(x0)
        tracker = _Tracker(x0)
        for step in range(plan.steps):
            stats = _dataset_pass(model, x_adv, y, loss_fn, plan, o.batch_size, o.device, direction)
            tracker.record(stats, x_adv)
            _take_step(x_adv, x0, direction, stats, plan, o.device)
            if progress is not None:
                progress(step + 1, plan.steps)
        tracker.record(_dataset_pass(model, x_adv, y, loss_fn, plan, o.batch_size, o.device, None), x_adv)
        return tracker.result(x0, plan, o.device)


def project_w_ball(x_adv: torch.Tensor, x0: torch.Tensor, *, delta: float, norm: str = "Linf",
                   p: float = 2, device: torch.device | str = "cpu") -> torch.Tensor:
    """Projection step of W-PGD, then clip to [0, 1]; returns a new (N, C, H, W) tensor.

    p = 2: c = min(1, delta / dist(X, X0)) with dist over the whole set (all ranks); 'L2' scales
    every perturbation by c, 'Linf' clips each image's perturbation to c ||D_i||_inf. p = inf:
    per-sample projection onto the delta-ball. ``device`` holds the collective's buffer.
    """
    norm = check_norm(norm)
    if dual_exponent(p) == 1:
        return project_to_ball(x_adv, x0, delta, norm).clamp_(0.0, 1.0)
    perturbation = x_adv - x0
    _shrink_to_w2_ball_(perturbation, delta, norm, device)
    return perturbation.add_(x0).clamp_(0.0, 1.0)


def dataset_distance(x_adv: torch.Tensor, x0: torch.Tensor, *, norm: str = "Linf", p: float = 2,
                     device: torch.device | str = "cpu") -> float:
    """W_p distance of a coupled perturbation: sqrt(mean_i ||X_i - X0_i||_r^2) (p = 2) or
    max_i ||X_i - X0_i||_r (p = inf), over all ranks."""
    norms = per_sample_norm(x_adv - x0, check_norm(norm)).double()
    if dual_exponent(p) == 1:
        return global_max(norms.max().item() if norms.numel() else 0.0, device=device)
    square_sum, count = global_sums(norms.square().sum().item(), norms.numel(), device=device)
    return math.sqrt(square_sum / max(count, 1.0))


def w_direction(grad: torch.Tensor, norm: str, q: int) -> torch.Tensor:
    """Unnormalised W-PGD direction sign(g) |g|^(s-1) ||g||_s^(q-s) per sample, for q in {1, 2}."""
    if q == 1:
        return ascent_direction(grad, norm)
    if norm == "Linf":  # s = 1: sign(g) * ||g||_1
        return grad.sign().mul_(per_sample_view(per_sample_norm(grad, "L1"), grad))
    return grad  # s = 2, q = 2: g itself


def dual_exponent(p: float) -> int:
    """q, the conjugate of p, for the supported p in {2, inf}."""
    p = float(p)
    if p == 2:
        return 2
    if math.isinf(p):
        return 1
    raise ValueError(f"p must be 2 or inf, got {p}")


# ----------------------------------------------------------------------------- W-PGD internals


@dataclass(frozen=True)
class _Plan:
    delta: float
    q: int
    norm: str
    steps: int
    eta: float

    @staticmethod
    def build(delta: float, p: float, norm: str, steps: int, attack: str) -> "_Plan":
        if delta < 0:
            raise ValueError(f"delta must be >= 0, got {delta}")
        if attack == "fgsm":
            return _Plan(delta, dual_exponent(p), norm, 1, delta)
        if attack != "pgd":
            raise ValueError(f"unknown attack {attack!r}; expected 'pgd' or 'fgsm'")
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        return _Plan(delta, dual_exponent(p), norm, steps, _STEP_FACTOR * delta / steps)


@dataclass(frozen=True)
class _PassStats:
    correct: torch.Tensor  # (N_local,) bool
    accuracy: float
    mean_loss: float
    direction_rms: float  # sqrt(mean_j ||dir_j||_r^2) over all ranks (0 on an evaluation pass)
    n: int


def _dataset_pass(model: nn.Module, x_adv: torch.Tensor, y: torch.Tensor, loss_fn: AttackLoss,
                  plan: _Plan, batch_size: int, device: torch.device | str,
                  direction: torch.Tensor | None) -> _PassStats:
    """Evaluate every batch; when ``direction`` is given also fill it with per-sample W directions."""
    correct = torch.empty(x_adv.shape[0], dtype=torch.bool)
    loss_sum = direction_square_sum = 0.0
    for start in range(0, x_adv.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        xb, yb = x_adv[rows].to(device), y[rows].to(device)
        if direction is None:
            with torch.no_grad():
                logits = model(xb)
                values = loss_fn(logits, yb)
        else:
            grad, values, logits = input_gradient(model, xb, lambda z: loss_fn(z, yb))
            batch_direction = w_direction(grad, plan.norm, plan.q)
            if plan.q == 2:  # the normaliser; q = 1 directions are used as they are
                direction_square_sum += per_sample_norm(batch_direction, plan.norm).double().square().sum().item()
            direction[rows] = batch_direction.to(direction.device)
        correct[rows] = (logits.argmax(dim=1) == yb).cpu()
        loss_sum += values.double().sum().item()
    n_correct, loss_sum, direction_square_sum, n = global_sums(
        correct.sum().item(), loss_sum, direction_square_sum, x_adv.shape[0], device=device)
    n = max(int(n), 1)
    return _PassStats(correct, n_correct / n, loss_sum / n, math.sqrt(direction_square_sum / n), n)


def _take_step(x_adv: torch.Tensor, x0: torch.Tensor, direction: torch.Tensor, stats: _PassStats,
               plan: _Plan, device: torch.device | str) -> None:
    """In place: X <- clip_[0,1](proj(X + eta * dir / normaliser)); ``direction`` is overwritten."""
    if plan.q == 1:  # the same arithmetic as pointwise ``pgd``
        x_adv.add_(direction.mul_(plan.eta))
        x_adv.copy_(project_to_ball(x_adv, x0, plan.delta, plan.norm).clamp_(0.0, 1.0))
        return
    step = plan.eta / stats.direction_rms if stats.direction_rms > 0 else 0.0
    perturbation = direction.mul_(step).add_(x_adv).sub_(x0)
    _shrink_to_w2_ball_(perturbation, plan.delta, plan.norm, device)
    torch.add(x0, perturbation, out=x_adv).clamp_(0.0, 1.0)


def _shrink_to_w2_ball_(perturbation: torch.Tensor, delta: float, norm: str, device: torch.device | str) -> None:
    """In place: with c = min(1, delta / dist), 'L2' scales D by c, 'Linf' clips D_i to c ||D_i||_inf."""
    norms = per_sample_norm(perturbation, norm)
    square_sum, count = global_sums(norms.double().square().sum().item(), norms.numel(), device=device)
    distance = math.sqrt(square_sum / max(count, 1.0))
    if distance <= delta:
        return
    factor = delta / distance
    if norm == "L2":
        perturbation.mul_(factor)
    else:
        bound = per_sample_view(norms.mul_(factor), perturbation)
        perturbation.clamp_(min=-bound, max=bound)


class _Tracker:
    """Per-iterate accuracy and loss; keeps the iterate with the lowest accuracy (first one on ties)."""

    def __init__(self, x0: torch.Tensor):
        self.accuracies: list[float] = []
        self.losses: list[float] = []
        self.best_x = torch.empty_like(x0)
        self.best_correct = torch.empty(0, dtype=torch.bool)
        self.best_index = -1
        self.n = 0

    def record(self, stats: _PassStats, x_adv: torch.Tensor) -> None:
        log.debug("W-PGD iterate %d: accuracy %.4f, loss %.4f", len(self.accuracies), stats.accuracy,
                  stats.mean_loss)
        if self.best_index < 0 or stats.accuracy < self.accuracies[self.best_index]:
            self.best_index = len(self.accuracies)
            self.best_x.copy_(x_adv)
            self.best_correct = stats.correct
        self.accuracies.append(stats.accuracy)
        self.losses.append(stats.mean_loss)
        self.n = stats.n

    def result(self, x0: torch.Tensor, plan: _Plan, device: torch.device | str) -> WAttackResult:
        distance = dataset_distance(self.best_x, x0, norm=plan.norm, p=_exponent_p(plan.q), device=device)
        return WAttackResult(
            correct=self.best_correct, x_adv=self.best_x, accuracy=self.accuracies[self.best_index],
            worst_iterate=self.best_index, max_loss=max(self.losses), distance=distance,
            accuracy_per_iterate=tuple(self.accuracies), loss_per_iterate=tuple(self.losses), n=self.n)


def _exponent_p(q: int) -> float:
    return 2.0 if q == 2 else math.inf
