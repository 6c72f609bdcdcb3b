"""Sensitivity bounds on distributional adversarial accuracy without an attack (Bai et al. 2023, sec. 4).

From one pass over the clean data (batches streamed to ``device``, sums over ranks under
torch.distributed):

- A = clean accuracy, V(0) = mean loss, W(0) = mean loss over misclassified points,
- Upsilon = (mean_i ||grad_x J(x_i, y_i)||_s^q)^(1/q), s = 1 for 'Linf' images, s = 2 for 'L2';
  q = 2 for W_2 (p = 2), q = 1 for W_inf. First order: V(delta) ~ V(0) + delta * Upsilon.

For a budget delta, bounds on the accuracy ratio A_delta / A:

- R_u = (accuracy under an attack at delta) / A: any attack's accuracy bounds the true adversarial
  accuracy from above (pass W-PGD's accuracy for the tightest figure),
- R_l = min{(W(0) - E_Q[J]) / (W(0) - V(0)), (W(0) - V(0) - delta Upsilon) / (W(0) - V(0))},
  E_Q[J] the mean loss under W-FGSM at delta (``WAttackResult.loss_per_iterate[-1]`` of
  ``w_pgd(..., attack='fgsm')``).

Shapes: x (N, C, H, W) float32 in [0, 1]; y (N,) int64; delta in pixel units of [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..distributed import global_sums
from ._mode import eval_mode
from .losses import LossSpec, get_attack_loss
from .pointwise import check_norm, input_gradient, per_sample_norm
from .wasserstein_eval import dual_exponent

_DUAL_NORM = {"Linf": "L1", "L2": "L2"}


@dataclass(frozen=True)
class CleanSensitivity:
    """Clean-data figures: accuracy A, V(0), W(0) (nan if nothing is misclassified), Upsilon."""

    accuracy: float
    mean_loss: float
    misclassified_loss: float
    upsilon: float
    n: int
    p: float
    norm: str

    def first_order_loss(self, delta: float) -> float:
        """V(0) + delta * Upsilon, the first-order estimate of the worst-case mean loss V(delta)."""
        return self.mean_loss + delta * self.upsilon


@dataclass(frozen=True)
class AccuracyRatioBounds:
    """Bounds on A_delta / A at one budget: ``lower`` = R_l, ``upper`` = R_u (nan when undefined)."""

    delta: float
    lower: float
    upper: float


def clean_sensitivity(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, p: float = 2,
                      norm: str = "Linf", loss: LossSpec = "ce", batch_size: int = 256,
                      device: torch.device | str = "cpu") -> CleanSensitivity:
    """A, V(0), W(0) and Upsilon of the loss ('ce' | 'dlr' | 'redlr' | callable) on (x, y).

    Cost: one forward + backward pass over the data set, ``batch_size`` examples at a time.
    """
    norm = check_norm(norm)
    q = dual_exponent(p)
    loss_fn = get_attack_loss(loss)
    sums = torch.zeros(5, dtype=torch.float64)  # correct, loss, misclassified loss, misclassified, ||g||^q
    with eval_mode(model):
        for start in range(0, x.shape[0], batch_size):
            xb, yb = x[start:start + batch_size].to(device), y[start:start + batch_size].to(device)
            grad, values, logits = input_gradient(model, xb, lambda z: loss_fn(z, yb))
            sums += _batch_sums(grad, values, logits.argmax(dim=1) == yb, norm, q)
    correct, loss_sum, wrong_loss, wrong, grad_power, n = global_sums(*sums.tolist(), x.shape[0], device=device)
    n = max(n, 1.0)
    return CleanSensitivity(
        accuracy=correct / n, mean_loss=loss_sum / n,
        misclassified_loss=wrong_loss / wrong if wrong > 0 else math.nan,
        upsilon=(grad_power / n) ** (1.0 / q), n=int(n), p=float(p), norm=norm)


def accuracy_ratio_bounds(stats: CleanSensitivity, delta: float, *, attacked_loss: float,
                          attacked_accuracy: float | None = None) -> AccuracyRatioBounds:
    """R_l and R_u at ``delta``; ``attacked_loss`` = E_Q[J] from W-FGSM at delta (same loss and
    threat model as ``stats``), ``attacked_accuracy`` = an attack's accuracy at delta (R_u nan if None)."""
    gap = stats.misclassified_loss - stats.mean_loss
    if gap > 0:
        lower = min((stats.misclassified_loss - attacked_loss) / gap, (gap - delta * stats.upsilon) / gap)
    else:
        lower = math.nan
    upper = math.nan
    if attacked_accuracy is not None and stats.accuracy > 0:
        upper = attacked_accuracy / stats.accuracy
    return AccuracyRatioBounds(delta=float(delta), lower=lower, upper=upper)


def _batch_sums(grad: torch.Tensor, values: torch.Tensor, correct: torch.Tensor, norm: str, q: int) -> torch.Tensor:
    values = values.double()
    wrong = ~correct
    grad_norms = per_sample_norm(grad, _DUAL_NORM[norm]).double()
    return torch.stack([correct.double().sum(), values.sum(), values[wrong].sum(), wrong.double().sum(),
                        grad_norms.pow(q).sum()]).cpu()
