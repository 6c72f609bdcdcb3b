"""Pointwise attacks in [0, 1] pixel space: FGSM (Goodfellow et al. 2015), PGD (Madry et al. 2018).

Threat model: each x'_i within ||x'_i - x_i|| <= eps (l_inf or l_2, eps in pixel units of [0, 1])
and inside [0, 1]. Shapes: x (N, C, H, W) float32 in [0, 1], y (N,) int64; the model maps x to
logits (N, K). Attacks run the model in eval mode and restore its modes afterwards. Each sample's
gradient is its own: per-sample losses are summed, never averaged, before differentiation.

- l_inf steps: x <- clip(x + a * sign(g)); l_2 steps: x <- clip(x + a * g / ||g||_2).
- Projection onto the ball (not the sphere): a perturbation already inside is left alone.

The attack objects (one family for training and evaluation, in :data:`~.registry.ATTACKS` as ``pgd``, ``fgsm``,
``n-fgsm``; the training inner maximisers are built from them) are :class:`~.configured.ConfiguredAttack` subclasses:
:class:`PGD` (none, uniform or normal start; default step :func:`default_step`), :class:`FGSM` (optionally with
random start: :meth:`FGSM.with_random_start`) and :class:`NoiseFGSM` (N-FGSM).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from ..config.options import option
from ._mode import eval_mode
from .configured import ConfiguredAttack
from .losses import LossSpec, get_attack_loss

Objective = Callable[[torch.Tensor], torch.Tensor]
NORMS = ("Linf", "L2")
STARTS = ("none", "uniform", "normal")
_TRADES_START_STD = 0.001
_STEP_FACTOR = 2.5  # default step 2.5 eps / K (Madry et al. 2018)
FGSM_STEP_FACTOR = 1.25  # FGSM with random start: one step of 1.25 eps (Wong et al. 2020)


def default_step(eps: float | torch.Tensor, steps: int) -> float | torch.Tensor:
    """The default step of a K-step pointwise attack: 2.5 eps / K, same units as eps (a number, or per-sample
    radii (N,))."""
    return _STEP_FACTOR * eps / max(1, steps)


@dataclass(frozen=True)
class PGDOptions:
    eps: float = option(8 / 255, "radius of the ball in pixel units of [0, 1]")
    norm: str = option("Linf", "norm of the ball", choices=NORMS)
    steps: int = option(10, "gradient steps")
    step_size: float | None = option(None, "step length (default: 2.5 eps / steps)")
    start: str = option("uniform", "start point: x itself, uniform in the ball, or x + 0.001 N(0, 1) (TRADES)",
                        choices=STARTS)


@dataclass(frozen=True)
class FGSMOptions:
    eps: float = option(8 / 255, "radius of the ball in pixel units of [0, 1]")
    norm: str = option("Linf", "norm of the ball", choices=NORMS)
    random_start: bool = option(False, "start at a uniform random point of the ball instead of x")
    step_size: float | None = option(None, "step length (default: eps)")


@dataclass(frozen=True)
class NoiseFGSMOptions:
    eps: float = option(8 / 255, "radius of the ball in pixel units of [0, 1]")
    norm: str = option("Linf", "norm of the ball", choices=NORMS)
    noise_scale: float = option(2.0, "the uniform noise fills the (noise_scale * eps)-ball")
    step_size: float | None = option(None, "step length (default: eps)")


class _Pointwise(ConfiguredAttack):
    """A pointwise attack: ``options`` has ``eps`` and ``step_size``; :meth:`scaled` serves the eps warm-up."""

    def scaled(self, factor: float) -> "_Pointwise":
        """A copy with ``eps`` and an explicit ``step_size`` times ``factor`` (:class:`~.ramp.RadiusRamp`)."""
        o = self.options
        return type(self)(o, eps=o.eps * factor, step_size=None if o.step_size is None else o.step_size * factor)


class PGD(_Pointwise):
    """K-step PGD (Madry et al., ICLR 2018) in the eps-ball (l_inf or l_2, pixel units of [0, 1]), each step
    projected to the ball and [0, 1]; returns the last iterate. ``start`` 'uniform' (PGD-AT), 'normal' (TRADES:
    x + 0.001 N(0, 1)) or 'none', drawn from ``generator`` (default: the global RNG); ``step_size`` None:
    :func:`default_step`."""

    Options = PGDOptions

    def perturb(self, model, x, y, loss, generator):
        o = self.options
        step = o.step_size if o.step_size is not None else default_step(o.eps, o.steps)
        return pgd_maximize(model, x, lambda logits: loss(logits, y), eps=o.eps, norm=o.norm, steps=o.steps,
                            step_size=step, start=o.start, generator=generator)


class FGSM(_Pointwise):
    """FGSM (Goodfellow, Shlens & Szegedy, ICLR 2015): one steepest-ascent step of ``step_size`` (default eps;
    l_inf: sign of the gradient, l_2: normalised gradient) from x, or from a uniform point of the ball with
    ``random_start``, projected to the eps-ball around x and to [0, 1]."""

    Options = FGSMOptions

    @classmethod
    def with_random_start(cls, eps: float, norm: str = "Linf", step_size: float | None = None) -> "FGSM":
        """FGSM with random start (Wong, Rice & Kolter, ICLR 2020), the fgsm-at inner maximiser: a uniform point
        of the ball, one step of ``step_size`` (default 1.25 eps)."""
        return cls(eps=eps, norm=norm, random_start=True,
                   step_size=FGSM_STEP_FACTOR * eps if step_size is None else step_size)

    def perturb(self, model, x, y, loss, generator):
        o = self.options
        return pgd_maximize(model, x, lambda logits: loss(logits, y), eps=o.eps, norm=o.norm, steps=1,
                            step_size=o.eps if o.step_size is None else o.step_size,
                            start="uniform" if o.random_start else "none", generator=generator)


class NoiseFGSM(_Pointwise):
    """N-FGSM (de Jorge et al., NeurIPS 2022): uniform noise in the (noise_scale * eps)-ball, one step of
    ``step_size`` (default eps), no projection to the eps-ball (:func:`noise_fgsm_maximize`)."""

    Options = NoiseFGSMOptions

    def perturb(self, model, x, y, loss, generator):
        o = self.options
        return noise_fgsm_maximize(model, x, lambda logits: loss(logits, y), eps=o.eps, norm=o.norm,
                                   noise_scale=o.noise_scale, step_size=o.step_size, generator=generator)


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
         loss: LossSpec = "ce", random_start: bool = False, step_size: float | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """One gradient step of size ``step_size`` (default ``eps``) from x (or a uniform random point
    of the ball), projected to the eps-ball and [0, 1]. Returns x_adv (N, C, H, W)."""
    return pgd(model, x, y, eps=eps, norm=norm, steps=1, step_size=eps if step_size is None else step_size,
               loss=loss, random_start=random_start, generator=generator)


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, norm: str = "Linf",
        steps: int = 10, step_size: float, loss: LossSpec = "ce", random_start: bool = True,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD maximising ``loss(logits, y) -> (N,)`` ('ce' | 'dlr' | 'redlr' | callable).

    Starts at a uniform random point of the ball when ``random_start``; returns the last iterate
    x_adv (N, C, H, W) in [0, 1] with ||x_adv - x|| <= eps per sample.
    """
    loss_fn = get_attack_loss(loss)
    return pgd_maximize(model, x, lambda logits: loss_fn(logits, y), eps=eps, norm=norm, steps=steps,
                        step_size=step_size, start="uniform" if random_start else "none", generator=generator)


def pgd_maximize(model: nn.Module, x: torch.Tensor, objective: Objective, *, eps: float, norm: str = "Linf",
                 steps: int = 10, step_size: float, start: str = "none",
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """PGD maximising a per-sample ``objective(logits_adv) -> (N,)`` over the eps-ball around x.

    ``start``: 'none' (x itself), 'uniform' (uniform in the ball) or 'normal' (x + 0.001 * N(0, 1),
    the TRADES start, needed when the objective has zero gradient at x, e.g. KL to clean logits).
    Returns the last iterate, detached, (N, C, H, W) in [0, 1].
    """
    norm = check_norm(norm)
    x0 = x.detach()
    x_adv = _start_point(x0, eps, norm, start, generator)
    with eval_mode(model):
        for _ in range(steps):
            grad, _, _ = input_gradient(model, x_adv, objective)
            x_adv = x_adv + step_size * ascent_direction(grad, norm)
            x_adv = project_to_ball(x_adv, x0, eps, norm).clamp_(0.0, 1.0)
    return x_adv.detach()


def noise_fgsm_maximize(model: nn.Module, x: torch.Tensor, objective: Objective, *, eps: float, norm: str = "Linf",
                        noise_scale: float = 2.0, step_size: float | None = None,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """N-FGSM (de Jorge et al. 2022): one gradient step of ``step_size`` (default eps) from a uniform random point
    of the (noise_scale * eps)-ball, NOT projected back to the eps-ball (only clipped to [0, 1]): the
    perturbation can reach (noise_scale * eps + step_size). The wide noise and the missing projection are what
    keep single-step training from catastrophic overfitting at large eps.
    Returns (N, C, H, W) in [0, 1], detached."""
    norm = check_norm(norm)
    x0 = x.detach()
    x_noise = _start_point(x0, noise_scale * eps, norm, "uniform", generator)
    with eval_mode(model):
        grad, _, _ = input_gradient(model, x_noise, objective)
    step = eps if step_size is None else step_size
    return (x_noise + step * ascent_direction(grad, norm)).clamp_(0.0, 1.0).detach()


def input_gradient(model: nn.Module, x: torch.Tensor, objective: Objective
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample input gradients of ``objective(model(x))``.

    Returns (grad (N, C, H, W), objective values (N,), logits (N, K)), all detached. Parameter
    ``.grad`` fields are not touched.
    """
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x)
        values = objective(logits)
        (grad,) = torch.autograd.grad(values.sum(), x)
    return grad, values.detach(), logits.detach()


def ascent_direction(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """Steepest-ascent unit direction per sample: sign(g) for l_inf, g / ||g||_2 for l_2 (0 if g = 0)."""
    if check_norm(norm) == "Linf":
        return grad.sign()
    scale = per_sample_norm(grad, "L2").clamp_min(torch.finfo(grad.dtype).tiny).reciprocal()
    return grad * per_sample_view(scale, grad)


def project_to_ball(x_adv: torch.Tensor, x0: torch.Tensor, eps: float | torch.Tensor, norm: str) -> torch.Tensor:
    """Nearest point of {x : ||x - x0_i|| <= eps_i} per sample (l_inf: clip; l_2: shrink if outside).
    ``eps``: a number, or per-sample radii of shape (N,)."""
    perturbation = x_adv - x0
    if isinstance(eps, torch.Tensor) and eps.dim() == 1:
        eps = per_sample_view(eps.to(perturbation.dtype), perturbation)
    if check_norm(norm) == "Linf":
        return torch.minimum(torch.maximum(x_adv, x0 - eps), x0 + eps)
    radius = per_sample_norm(perturbation, "L2").clamp_min(torch.finfo(perturbation.dtype).tiny)
    return x0 + perturbation * (eps / per_sample_view(radius, perturbation)).clamp(max=1.0)


def per_sample_norm(t: torch.Tensor, norm: str) -> torch.Tensor:
    """||t_i|| per sample over all non-batch dims: (N, ...) -> (N,); norm 'Linf' | 'L2' | 'L1'."""
    order = {"Linf": math.inf, "L2": 2, "L1": 1}.get(norm)
    if order is None:
        raise ValueError(f"unknown norm {norm!r}; expected 'Linf', 'L2' or 'L1'")
    return torch.linalg.vector_norm(t.flatten(1), ord=order, dim=1)


def per_sample_view(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Reshape (N,) to (N, 1, ..., 1) to broadcast over ``like``."""
    return values.view(-1, *([1] * (like.dim() - 1)))


def check_norm(norm: str) -> str:
    """Canonical norm name 'Linf' | 'L2' (case-insensitive input)."""
    canonical = {n.lower(): n for n in NORMS}.get(str(norm).lower())
    if canonical is None:
        raise ValueError(f"unknown norm {norm!r}; expected one of {NORMS}")
    return canonical


def _start_point(x0: torch.Tensor, eps: float, norm: str, start: str,
                  generator: torch.Generator | None) -> torch.Tensor:
    """Starting point of an attack (see ``pgd_maximize``), projected to the ball and [0, 1]."""
    if start not in STARTS:
        raise ValueError(f"unknown start {start!r}; expected one of {STARTS}")
    if start == "none":
        return x0.clone()
    if start == "normal":
        noise = _TRADES_START_STD * _randn_like(x0, generator)
    elif norm == "Linf":
        noise = eps * (2.0 * _rand_like(x0, generator) - 1.0)
    else:
        noise = _uniform_l2_ball(x0, eps, generator)
    return project_to_ball(x0 + noise, x0, eps, norm).clamp_(0.0, 1.0)


def _uniform_l2_ball(x0: torch.Tensor, eps: float, generator: torch.Generator | None) -> torch.Tensor:
    direction = _randn_like(x0, generator)
    direction = direction / per_sample_view(per_sample_norm(direction, "L2").clamp_min(1e-12), direction)
    dim = direction[0].numel()
    radius = eps * _rand_like(x0.new_empty(x0.shape[0]), generator).pow(1.0 / dim)
    return direction * per_sample_view(radius, direction)


def _rand_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else t.device
    return torch.rand(t.shape, generator=generator, device=device, dtype=t.dtype).to(t.device)


def _randn_like(t: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    device = generator.device if generator is not None else t.device
    return torch.randn(t.shape, generator=generator, device=device, dtype=t.dtype).to(t.device)
