"""ARMOR_D re-weighting: aggregate per-sample losses with worst-case sample weights.

Birrell et al., "Optimal-transport-regularized divergences" (code: star-ailab/ARMOR); METHODS.md section 4.
An aggregator replaces the batch mean of a base method's per-sample loss:

    losses: (N,) per-sample (adversarial) losses, any float dtype, with autograd graph
    aggregate = aggregator(losses)          # 0-dim tensor, same dtype as losses
    w = aggregator.weights(losses)          # (N,) effective weights d aggregate / d L_i (no graph)

Every aggregator is an ``nn.Module``: its trainable scalars (lambda, nu) are ``nn.Parameter``s, so they are
saved and restored with ``state_dict()``; ``learned_parameters()`` lists them so that the engine can give them
their own optimiser, learning rate and schedule (the authors never decay that rate: a bug we do not copy).

Distributed data parallel: the aggregate is computed over the LOCAL batch of each rank. Unlike the mean, a
re-weighted aggregate of local batches is not the aggregate of the global batch, so results depend on the
per-rank batch size; ArmorKL solves its own lambda* per rank, and the gradients of learned lambda / nu are
averaged across ranks by DDP like any other parameter.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import nn

logger = logging.getLogger(__name__)

__all__ = [
    "Aggregator",
    "MeanAggregator",
    "ArmorKL",
    "ArmorKLLearned",
    "ArmorAlpha",
    "mix_with_clean",
    "aggregator_param_groups",
]


def mix_with_clean(aggregate: torch.Tensor, clean_ce: torch.Tensor, t: float) -> torch.Tensor:
    """t * clean_ce + (1 - t) * aggregate (METHODS.md section 4; authors use t = 0.5).

    aggregate, clean_ce: 0-dim tensors (clean_ce is the batch-mean clean cross-entropy); t in [0, 1].
    """
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"mixing weight t must lie in [0, 1], got {t}")
    return t * clean_ce + (1.0 - t) * aggregate


def aggregator_param_groups(aggregator: "Aggregator", lr: float, **options) -> list[dict]:
    """Optimiser parameter groups for the aggregator's own learned scalars ([] when it learns nothing).

    Example: ``torch.optim.Adam(aggregator_param_groups(agg, lr=4e-6))`` plus a schedule of its own.
    ``options`` (e.g. ``weight_decay=0.0``) are copied into the group.
    """
    params = aggregator.learned_parameters()
    return [{"params": params, "lr": lr, **options}] if params else []


class Aggregator(nn.Module):
    """Interface: per-sample losses (N,) -> scalar aggregate. Subclasses implement forward and weights."""

    def forward(self, losses: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        raise NotImplementedError

    def weights(self, losses: torch.Tensor) -> torch.Tensor:  # pragma: no cover - interface
        """(N,) effective weights d aggregate / d L_i at the current parameters, detached."""
        raise NotImplementedError

    def learned_parameters(self) -> list[nn.Parameter]:
        """The aggregator's trainable scalars (give them their own learning rate and schedule)."""
        return list(self.parameters())

    def stats(self) -> dict[str, torch.Tensor]:
        """Detached 0-dim tensors for logging (no host sync here; the caller converts)."""
        return {}

    def reset_epoch(self) -> int:
        """Call at the end of every epoch; returns the number of warnings-worthy events (0 here)."""
        return 0


class MeanAggregator(Aggregator):
    """Plain batch mean (re-weighting 'none'): weights 1/N."""

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        return losses.mean()

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        return torch.full_like(losses.detach(), 1.0 / losses.numel())


class ArmorKL(Aggregator):
    """KL re-weighting with exact lambda* (the authors' "bisection" variant).

    phi(lambda) = eps * lambda + T * logmeanexp(L / T),  T = lambda + kappa,
    lambda* = argmin_{0 <= lambda <= lambda_cap} phi(lambda), found on DETACHED losses in float64.
    phi is convex with phi'(lambda) = eps - KL(softmax(L/T) || uniform), which increases in lambda, so:
    lambda* = 0 when phi'(0) >= 0; otherwise the root is bracketed on the doubling grid
    lambda_start * 2^k (k = 0, 1, ...) up to lambda_cap and refined by ``rounds`` rounds of vectorised
    ``sections``-section search (bracket shrinks by sections^rounds; defaults: 32^8 ~ 1e12).
    Everything runs as a fixed sequence of tensor ops: no host synchronisation, no Python loop over data.

    The returned value phi(lambda*) is differentiated through L with lambda* held fixed, which is exact by
    the envelope theorem: d aggregate / d L = softmax(L / (lambda* + kappa)). kappa floors the temperature.
    With T = 0 (kappa = 0 and lambda* = 0) the value is the limit max_i L_i (gradient shared by ties).

    If phi'(lambda_cap) < 0 the root lies beyond the cap: lambda* = lambda_cap (the constrained optimum),
    a counter is incremented, and ``reset_epoch()`` logs one warning per epoch and returns the count;
    ``cap_hits`` reads the counter (that read syncs with the device).

    Args:
        eps: divergence budget eps_D > 0 (author default 0.02 for TRADES; eps -> 0 tends to the mean).
        kappa: temperature floor >= 0 (author default 0.1).
        lambda_cap: largest lambda searched.
        lambda_start: first bracket end point (doubled until lambda_cap).
    """

    def __init__(
        self,
        eps: float,
        kappa: float = 0.0,
        lambda_cap: float = 1e4,
        lambda_start: float = 10.0,
        sections: int = 32,
        rounds: int = 8,
    ):
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0 (eps -> 0 is the plain mean: use MeanAggregator), got {eps}")
        if kappa < 0:
            raise ValueError(f"kappa must be >= 0, got {kappa}")
        if not 0 < lambda_start <= lambda_cap:
            raise ValueError(f"need 0 < lambda_start <= lambda_cap, got {lambda_start}, {lambda_cap}")
        if sections < 2 or rounds < 1:
            raise ValueError("need sections >= 2 and rounds >= 1")
        self.eps, self.kappa, self.lambda_cap = float(eps), float(kappa), float(lambda_cap)
        self.sections, self.rounds = int(sections), int(rounds)
        ends = [0.0]
        point = float(lambda_start)
        while point < lambda_cap:
            ends.append(point)
            point *= 2.0
        ends.append(float(lambda_cap))
        grid = torch.tensor(ends, dtype=torch.float64)  # [0, start, 2 start, ..., cap]
        fractions = torch.linspace(0.0, 1.0, self.sections + 1, dtype=torch.float64)[1:-1]
        # float64 constants cached per device (not buffers: module.float()/.half() must not round them,
        # and a per-call host-to-device copy would synchronise)
        self._constants = {grid.device: (grid, fractions)}
        self.register_buffer("last_lambda", torch.zeros((), dtype=torch.float64), persistent=False)
        self.register_buffer("_cap_hits", torch.zeros((), dtype=torch.long), persistent=False)
        self.register_buffer("_calls", torch.zeros((), dtype=torch.long), persistent=False)

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        lam, cap_hit = self.solve_lambda(losses)
        self._record(lam, cap_hit)
        temperature = lam + self.kappa
        positive = temperature > 0
        safe_t = torch.where(positive, temperature, torch.ones_like(temperature))
        scaled = losses.to(torch.float64) / safe_t
        soft = self.eps * lam + safe_t * (torch.logsumexp(scaled, dim=0) - math.log(losses.numel()))
        value = torch.where(positive, soft, losses.to(torch.float64).amax())
        return value.to(losses.dtype)

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        """softmax(L / (lambda* + kappa)), or uniform over the argmax ties when that temperature is 0."""
        _check_losses(losses)
        lam, _ = self.solve_lambda(losses)
        loss64 = losses.detach().to(torch.float64)
        temperature = lam + self.kappa
        safe_t = torch.where(temperature > 0, temperature, torch.ones_like(temperature))
        ties = (loss64 == loss64.amax()).to(torch.float64)
        w = torch.where(temperature > 0, torch.softmax(loss64 / safe_t, dim=0), ties / ties.sum())
        return w.to(losses.dtype)

    @torch.no_grad()
    def solve_lambda(self, losses: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """lambda* (0-dim float64) and whether the cap was hit (0-dim bool), from detached losses (N,)."""
        loss64 = losses.detach().to(torch.float64)
        grid, fractions = self._constants_on(loss64.device)
        slope = self._slope(loss64, grid)  # (G,), nondecreasing
        ok = slope >= 0
        at_zero, cap_hit = ok[0], ~ok[-1]
        # Indices stay tensors (index_select, never int()): no host sync, so this also runs on 'meta'.
        first = torch.argmax(ok.to(torch.int8)).reshape(1)  # first grid point with phi' >= 0 (0 when none)
        lo, hi = grid.index_select(0, (first - 1).clamp_min(0)), grid.index_select(0, first)
        for _ in range(self.rounds):
            nodes = torch.cat([lo, lo + (hi - lo) * fractions, hi])
            below = (self._slope(loss64, nodes[1:-1]) < 0).sum().reshape(1)  # interior nodes left of the root
            lo, hi = nodes.index_select(0, below), nodes.index_select(0, below + 1)
        inside = 0.5 * (lo + hi).squeeze(0)
        lam = torch.where(at_zero, torch.zeros_like(inside), torch.where(cap_hit, grid[-1], inside))
        return lam, cap_hit

    def _constants_on(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        if device not in self._constants:
            grid, fractions = next(iter(self._constants.values()))
            self._constants[device] = (grid.to(device), fractions.to(device))
        return self._constants[device]

    def _slope(self, loss64: torch.Tensor, lambdas: torch.Tensor) -> torch.Tensor:
        """phi'(lambda) = eps - KL(softmax(L/T) || uniform) for each lambda: (G,) -> (G,)."""
        n = loss64.numel()
        temperature = lambdas + self.kappa
        positive = temperature > 0
        safe_t = torch.where(positive, temperature, torch.ones_like(temperature))
        # KL = sum_i w_i log w_i + log N with w = softmax(z); spelled out because CPU log_softmax on small
        # (G, N) inputs can take milliseconds per call when its worker threads compete for cores.
        z = loss64.unsqueeze(0) / safe_t.unsqueeze(1)  # (G, N)
        z = z - z.amax(dim=1, keepdim=True)
        e = z.exp()
        total = e.sum(dim=1)
        kl = (e * z).sum(dim=1) / total - total.log() + math.log(n)
        ties = (loss64 == loss64.amax()).sum().to(torch.float64)
        kl_at_zero = math.log(n) - torch.log(ties)  # T -> 0: uniform over the argmax ties
        return self.eps - torch.where(positive, kl, kl_at_zero)

    def _record(self, lam: torch.Tensor, cap_hit: torch.Tensor) -> None:
        if self._cap_hits.device != lam.device:  # no parameters: the module may never have been moved
            self._cap_hits, self._calls = _moved(self._cap_hits, lam.device), _moved(self._calls, lam.device)
        self.last_lambda = lam.detach()
        self._cap_hits += cap_hit.to(torch.long)
        self._calls += 1

    @property
    def cap_hits(self) -> int:
        """Calls since the last ``reset_epoch()`` whose lambda* hit ``lambda_cap`` (syncs with the device)."""
        return int(self._cap_hits.item())

    def stats(self) -> dict[str, torch.Tensor]:
        return {"lambda": self.last_lambda.detach().clone(), "cap_hits": self._cap_hits.detach().clone()}

    def reset_epoch(self) -> int:
        """Log one warning if lambda* hit the cap during the epoch, reset the counters, return the hits."""
        hits, calls = self.cap_hits, int(self._calls.item())
        if hits:
            logger.warning(
                "ArmorKL: lambda* reached lambda_cap=%g in %d of %d batches this epoch; the aggregate used the "
                "constrained optimum lambda=lambda_cap (raise lambda_cap or eps=%g)",
                self.lambda_cap, hits, calls, self.eps,
            )
        self._cap_hits.zero_()
        self._calls.zero_()
        return hits


class _LearnedLambda(Aggregator):
    """Aggregators with a learned lambda = softplus(raw_lambda) + lambda_min > 0."""

    raw_lambda: nn.Parameter
    lambda_min: float

    @property
    def lam(self) -> torch.Tensor:
        """Current lambda > 0 (0-dim, with graph to raw_lambda)."""
        return F.softplus(self.raw_lambda) + self.lambda_min


class ArmorKLLearned(_LearnedLambda):
    """KL re-weighting with a learned lambda: eps * lambda + lambda * logmeanexp(L / lambda).

    lambda = softplus(raw) + lambda_min stays > 0 (the authors optimise lambda itself with Adam; for
    lambda >> 1 softplus is the identity, so the dynamics match there). Weights: softmax(L / lambda).
    """

    def __init__(self, eps: float, lambda0: float = 1.0, lambda_min: float = 1e-6):
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if not lambda0 > lambda_min >= 0:
            raise ValueError(f"need lambda0 > lambda_min >= 0, got {lambda0}, {lambda_min}")
        self.eps, self.lambda_min = float(eps), float(lambda_min)
        self.raw_lambda = nn.Parameter(torch.tensor(_inverse_softplus(lambda0 - lambda_min)))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        lam = self.lam
        return self.eps * lam + lam * (torch.logsumexp(losses / lam, dim=0) - math.log(losses.numel()))

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        return torch.softmax(losses.detach() / self.lam.detach(), dim=0)

    def stats(self) -> dict[str, torch.Tensor]:
        return {"lambda": self.lam.detach()}


class ArmorAlpha(_LearnedLambda):
    """alpha-divergence re-weighting (alpha > 1) with learned lambda > 0 and nu:

    f*(y) = (1/alpha) (alpha-1)^(alpha/(alpha-1)) relu(y)^(alpha/(alpha-1)) + 1/(alpha (alpha-1)),
    aggregate = eps * lambda + nu + lambda * mean_i f*((L_i - nu) / lambda).
    Weights: (1/N) ((alpha-1) relu((L_i - nu)/lambda))^(1/(alpha-1)); samples with L_i <= nu get weight 0.
    The weights sum to 1 only at the optimal nu. Author defaults (TRADES, CIFAR-10): eps 0.5, alpha 6,
    lambda0 1, nu0 -0.35, learning rate 4e-6 for (lambda, nu).
    """

    def __init__(self, eps: float, alpha: float, lambda0: float = 1.0, nu0: float = -0.35, lambda_min: float = 1e-6):
        super().__init__()
        if eps < 0:
            raise ValueError(f"eps must be >= 0, got {eps}")
        if alpha <= 1:
            raise ValueError(f"alpha must be > 1, got {alpha}")
        if not lambda0 > lambda_min >= 0:
            raise ValueError(f"need lambda0 > lambda_min >= 0, got {lambda0}, {lambda_min}")
        self.eps, self.alpha, self.lambda_min = float(eps), float(alpha), float(lambda_min)
        self.raw_lambda = nn.Parameter(torch.tensor(_inverse_softplus(lambda0 - lambda_min)))
        self.nu = nn.Parameter(torch.tensor(float(nu0)))

    def forward(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        lam = self.lam
        return self.eps * lam + self.nu + lam * self.conjugate((losses - self.nu) / lam).mean()

    def conjugate(self, y: torch.Tensor) -> torch.Tensor:
        """f*_alpha(y), elementwise."""
        a = self.alpha
        scale = (a - 1.0) ** (a / (a - 1.0)) / a
        return scale * torch.relu(y) ** (a / (a - 1.0)) + 1.0 / (a * (a - 1.0))

    def weights(self, losses: torch.Tensor) -> torch.Tensor:
        _check_losses(losses)
        y = (losses.detach() - self.nu.detach()) / self.lam.detach()
        return ((self.alpha - 1.0) * torch.relu(y)) ** (1.0 / (self.alpha - 1.0)) / losses.numel()

    def stats(self) -> dict[str, torch.Tensor]:
        return {"lambda": self.lam.detach(), "nu": self.nu.detach().clone()}


def _check_losses(losses: torch.Tensor) -> None:
    if losses.dim() != 1 or losses.numel() == 0:
        raise ValueError(f"expected per-sample losses of shape (N,) with N >= 1, got {tuple(losses.shape)}")


def _inverse_softplus(y: float) -> float:
    """x with softplus(x) = y > 0, stable for small and large y."""
    return y + math.log(-math.expm1(-y))


def _moved(counter: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A counter on another device (a meta tensor has no value to carry over: restart at 0)."""
    return torch.zeros_like(counter, device=device) if counter.is_meta else counter.to(device)
