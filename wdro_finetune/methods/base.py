"""Base training losses with per-sample values, so any re-weighting can consume them.

Each base: ``__call__(model, x, y, generator) -> LossOutput``; the model is in train mode on
entry. The inner maximiser is an :class:`~wdro_finetune.attacks.base.Attack` called with the base's own loss,
``maximizer(model, x, y, loss=lambda logits_adv, y: ..., generator=g)`` (eval mode and frozen parameters for
the attack, restored afterwards).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from ..attacks._mode import eval_mode
from ..attacks.base import Attack
from ..attacks.losses import cross_entropy, kl_divergence
from ..attacks.pointwise import default_step
from ..distributed import unwrap


@dataclass
class LossOutput:
    """per_sample: (N,) losses to aggregate; clean_ce: (N,) CE on clean inputs (for ARMOR's mix);
    logits_clean / logits_adv: (N, K) from the training-mode forwards; x_adv: (N, C, H, W)."""

    per_sample: torch.Tensor
    clean_ce: torch.Tensor
    logits_clean: torch.Tensor
    logits_adv: torch.Tensor
    x_adv: torch.Tensor
    stats: dict[str, float] = field(default_factory=dict)


class Trades:
    """TRADES (Zhang et al. 2019): L_i = CE(f(x_i), y_i) + beta * KL(f(x_i) || f(x'_i)), with x'
    maximising the KL (pointwise PGD, or W-PGD-budget / W-PGD-knapsack for W-DRO TRADES)."""

    name = "trades"

    def __init__(self, maximizer: Attack, beta: float = 6.0):
        self.maximizer, self.beta = maximizer, beta

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> LossOutput:
        plain = unwrap(model)  # attacks never go through the DDP wrapper
        with torch.no_grad(), eval_mode(plain):
            target = plain(x)
        x_adv = self.maximizer(plain, x, y, loss=lambda logits_adv, _: kl_divergence(target, logits_adv),
                               generator=generator)
        logits_clean, logits_adv = model(x), model(x_adv)
        ce = F.cross_entropy(logits_clean, y, reduction="none")
        kl = kl_divergence(logits_clean, logits_adv)
        return LossOutput(ce + self.beta * kl, ce, logits_clean, logits_adv, x_adv,
                          {"ce": ce.mean().item(), "kl": kl.mean().item()})


class AdversarialCE:
    """PGD-AT (Madry et al. 2018) / FGSM-AT with random start (Wong et al. 2020):
    L_i = CE(f(x'_i), y_i), x' maximising CE. The clean forward is only used for statistics."""

    def __init__(self, maximizer: Attack, name: str = "pgd-at"):
        self.maximizer, self.name = maximizer, name

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> LossOutput:
        x_adv = self.maximizer(unwrap(model), x, y, loss=cross_entropy, generator=generator)
        logits_clean, logits_adv = model(x), model(x_adv)
        ce_clean = F.cross_entropy(logits_clean, y, reduction="none")
        ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
        return LossOutput(ce_adv, ce_clean, logits_clean, logits_adv, x_adv, {"ce_adv": ce_adv.mean().item()})


class Mart:
    """MART (Wang et al. 2020), per sample:
    BCE(f(x'), y) + beta * KL(f(x) || f(x')) * (1 - p_y(x)),
    BCE = -log p_y(x') - log(1 - max_{k != y} p_k(x')), x' from PGD on CE (TRADES start)."""

    name = "mart"

    def __init__(self, maximizer: Attack, beta: float = 6.0):
        self.maximizer, self.beta = maximizer, beta

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                 generator: torch.Generator | None = None) -> LossOutput:
        x_adv = self.maximizer(unwrap(model), x, y, loss=cross_entropy, generator=generator)
        logits_clean, logits_adv = model(x), model(x_adv)
        bce, kl_weighted = mart_terms(logits_clean, logits_adv, y)
        ce = F.cross_entropy(logits_clean, y, reduction="none")
        return LossOutput(bce + self.beta * kl_weighted, ce, logits_clean, logits_adv, x_adv,
                          {"bce": bce.mean().item(), "kl_weighted": kl_weighted.mean().item()})


def mart_terms(logits_clean: torch.Tensor, logits_adv: torch.Tensor, y: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample MART boosted CE and (1 - p_y(x)) * KL(f(x) || f(x')): (N, K), (N, K), (N,) -> (N,), (N,)."""
    p_adv = F.softmax(logits_adv, dim=1)
    other = p_adv.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    bce = F.cross_entropy(logits_adv, y, reduction="none") - torch.log((1.0 - other).clamp_min(1e-12))
    p_clean_true = F.softmax(logits_clean, dim=1).gather(1, y[:, None]).squeeze(1)
    return bce, kl_divergence(logits_clean, logits_adv) * (1.0 - p_clean_true)


class Udr(nn.Module):
    """UDR (Bui et al. 2022): CE on a soft-ball adversarial example with an adaptive cost weight.

    Attack (uniform start in the eps-ball, K sign steps of size a, tau = a):
        u <- clip_[0,1](u + a sign(grad_u CE) - a grad_u[(lambda / tau) c(u - x)]),
        c(d) = 0.5 sum((|d| - eps)_+^2)  (zero inside the hard ball: points leave it only when it pays).
    Per-sample loss: CE(f(x'), y) - lambda c(x' - x) / tau. Every 10 steps:
        lambda <- max(0, lambda - 0.02 (eps - mean |x' - x|)).
    ``lam`` and the step counter are buffers, saved in checkpoints.
    """

    name = "udr"
    maximizer = None  # makes its own examples (no Attack to step or select)

    def __init__(self, eps: float, steps: int = 10, step_size: float | None = None, lam0: float = 1.0,
                 lam_lr: float = 0.02, every: int = 10):
        super().__init__()
        self.eps, self.steps = eps, steps
        self.step_size = step_size if step_size is not None else default_step(eps, steps)
        self.lam_lr, self.every = lam_lr, every
        self.register_buffer("lam", torch.tensor(float(lam0)))
        self.register_buffer("calls", torch.tensor(0, dtype=torch.long))

    def cost(self, delta: torch.Tensor) -> torch.Tensor:  # noqa: D401
        """c(d) = 0.5 * sum over pixels of (|d| - eps)_+^2: (N, C, H, W) -> (N,)."""
        return 0.5 * (delta.abs() - self.eps).clamp_min(0).pow(2).flatten(1).sum(1)

    def attack(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """The soft-ball attack: x_adv (N, C, H, W) in [0, 1], detached."""
        a, lam = self.step_size, float(self.lam)
        noise = torch.rand(x.shape, generator=generator, device=x.device) if generator is not None \
            else torch.rand_like(x)
        u = (x + (2 * noise - 1) * self.eps).clamp(0, 1).detach()
        with eval_mode(model):
            for _ in range(self.steps):
                u.requires_grad_(True)
                ce = F.cross_entropy(model(u), y, reduction="sum")
                penalty = (lam / a) * self.cost(u - x).sum()
                g_ce, g_pen = torch.autograd.grad(ce, u)[0], torch.autograd.grad(penalty, u)[0]
                u = (u.detach() + a * g_ce.sign() - a * g_pen).clamp(0, 1)
        return u.detach()

    def forward(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                generator: torch.Generator | None = None) -> LossOutput:
        x_adv = self.attack(unwrap(model), x, y, generator)
        logits_clean, logits_adv = model(x), model(x_adv)
        cost = self.cost(x_adv - x)
        ce_adv = F.cross_entropy(logits_adv, y, reduction="none")
        per_sample = ce_adv - float(self.lam) * cost / self.step_size
        self._adapt(x_adv - x)
        return LossOutput(per_sample, F.cross_entropy(logits_clean, y, reduction="none"), logits_clean, logits_adv,
                          x_adv, {"ce_adv": ce_adv.mean().item(), "udr_lambda": float(self.lam),
                                  "udr_outside": (cost > 0).float().mean().item()})

    @torch.no_grad()
    def _adapt(self, delta: torch.Tensor) -> None:
        self.calls += 1
        if int(self.calls) % self.every == 0:
            self.lam.copy_((self.lam - self.lam_lr * (self.eps - delta.abs().mean())).clamp_min(0))
