"""The exact W_p worst case for accuracy, given per-example minimal adversarial distances.

Setting. P is the empirical distribution of N labelled points (x_i, y_i); the ground cost is
||x - x'||_r between images with the same label and +inf across labels (labels never move); the
loss is the 0-1 loss (accuracy). Let d_i be the distance from x_i to the nearest point the model
misclassifies (d_i = 0 when x_i itself is misclassified, +inf when none exists or none was found).

Derivation. Any Q with W_p(Q, P) <= delta is a coupling that moves a fraction alpha_i in [0, 1] of
point i's mass (1/N) somewhere. Moving mass to a point still classified correctly costs budget and
lowers nothing, and reaching a misclassified point costs at least d_i^p per unit of mass, with
equality for the nearest one. So the worst case is::

    min_alpha  (1/N) * sum_{i correct} (1 - alpha_i)   s.t.  (1/N) * sum_i alpha_i * d_i^p <= delta^p,

a fractional knapsack with unit values and weights d_i^p: sort the correctly classified points by d_i
ascending and flip them (alpha_i = 1) until the budget N * delta^p is spent, the last one fractionally
(a mixture of the point and its adversarial copy, which a distribution may be). For p = inf the
constraint is max_i d_i <= delta over the moved mass: flip exactly the points with d_i <= delta, which
is pointwise robust accuracy at eps = delta. The integral variant (no fractional point) is what an
attacker that must move every point wholly achieves.

Exactness. With exact d_i this is THE worst-case accuracy over the ball. With d_i from attacks
(upper bounds on the true distances, each verified by re-classifying its adversarial example) the
allocation is a feasible attack, so its accuracy is an UPPER bound on the worst-case accuracy. Le,
Dao, Nguyen & Chu 2025 (WDA++) allocate their budget by the same rule.

Cost: one sort, O(N log N), then O(log N) per budget.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KnapsackResult:
    """Worst-case accuracy for each budget, in percent of N (arrays of shape (B,)).

    ``flips``: mass moved, in points (fractional); ``flips_int``: points moved wholly (integral variant).
    """

    deltas: np.ndarray
    accuracy: np.ndarray
    accuracy_int: np.ndarray
    flips: np.ndarray
    flips_int: np.ndarray
    n: int
    n_correct: int


def knapsack_accuracy(distances: np.ndarray, deltas, p: float = 2.0) -> KnapsackResult:
    """Worst-case W_p accuracy at every budget in ``deltas``.

    ``distances``: (N,) minimal adversarial distances in the ground norm (0 = misclassified, inf = no
    adversarial example known); ``deltas``: budgets >= 0 in the same units; ``p`` in [1, inf].
    """
    d = _check_distances(distances)
    budgets = np.atleast_1d(np.asarray(deltas, dtype=np.float64))
    if np.any(~np.isfinite(budgets)) or np.any(budgets < 0):
        raise ValueError(f"budgets must be finite and >= 0, got {budgets.tolist()}")
    if not p >= 1:
        raise ValueError(f"p must be >= 1 (or inf), got {p}")
    n = d.size
    correct = np.sort(d[d > 0])  # ascending; inf (never flipped) last
    if math.isinf(p):
        flips = np.searchsorted(correct, budgets, side="right").astype(np.float64)
        flips_int = flips.copy()
    else:
        flips, flips_int = _fractional_flips(correct, budgets, p, n)
    accuracy = 100.0 * (correct.size - flips) / n if n else np.full(budgets.shape, math.nan)
    accuracy_int = 100.0 * (correct.size - flips_int) / n if n else np.full(budgets.shape, math.nan)
    return KnapsackResult(budgets, accuracy, accuracy_int, flips, flips_int, n, int(correct.size))


def knapsack_weights(distances: np.ndarray, delta: float, p: float = 2.0) -> np.ndarray:
    """The optimal allocation alpha (N,) in [0, 1] for one budget: the fraction of each point's mass
    moved to its nearest adversarial point (0 for misclassified points, which need no budget)."""
    d = _check_distances(distances)
    result = knapsack_accuracy(d, [delta], p)
    alpha = np.zeros(d.size)
    order = np.argsort(np.where(d > 0, d, np.inf), kind="stable")[: result.n_correct]
    whole = int(result.flips_int[0])
    alpha[order[:whole]] = 1.0
    if whole < order.size:
        alpha[order[whole]] = result.flips[0] - whole
    return alpha


def _fractional_flips(correct: np.ndarray, budgets: np.ndarray, p: float, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Points flipped under the budgets N * delta^p: the whole ones by cumulative cost, then a fraction."""
    finite = correct[np.isfinite(correct)]
    cost = np.cumsum(finite**p)  # cost[k] = cost of flipping the k + 1 nearest points
    budget = n * budgets**p
    whole = np.searchsorted(cost, budget * (1 + 1e-12), side="right")  # spent <= budget (up to rounding)
    spent = np.where(whole > 0, cost[np.maximum(whole - 1, 0)] if cost.size else 0.0, 0.0)
    nxt = np.where(whole < finite.size, finite[np.minimum(whole, max(finite.size - 1, 0))] ** p
                   if finite.size else np.inf, np.inf)
    fraction = np.clip((budget - spent) / nxt, 0.0, 1.0)
    fraction = np.where(whole < finite.size, fraction, 0.0)
    return whole + fraction, whole.astype(np.float64)


def _check_distances(distances: np.ndarray) -> np.ndarray:
    d = np.asarray(distances, dtype=np.float64).reshape(-1)
    if np.any(np.isnan(d)) or np.any(d < 0):
        raise ValueError("distances must be >= 0 (inf allowed), without NaN")
    return d
