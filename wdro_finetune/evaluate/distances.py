"""The ``distances`` metric: per-example minimal adversarial distances and what follows from them for free.

Per example: the smallest verified adversarial perturbation found by the minimal-norm ensemble of
:mod:`wdro_finetune.attacks.minimal_norm` (FMN, FAB-T, refinement), in the ``--dist-norm`` ground norm
(default: the threat model's). From the distances d_i (0 = misclassified, inf = none found):

- ``w2k_acc@<delta>``: the W_2 worst-case accuracy of the fractional knapsack
  (:mod:`wdro_finetune.attacks.knapsack`): flip the nearest points first until mean(d^2) reaches
  delta^2, the last one fractionally. An attack, hence an UPPER bound on the true W_2 worst case;
  ``w2k_int_acc@<delta>`` the integral variant (whole points only). Budgets: ``--deltas``, as for ``wdro``.
- ``robust_acc@<eps>``: pointwise robust accuracy for a grid of eps (``--dist-eps``, default eps times
  1/4, 1/2, 3/4, 1, 5/4, 3/2): the share of points with d_i > eps.
- ``dist_median``, ``dist_q25``, ``dist_q75``: quantiles of d over all N points (an observed value each).

With a ``--dist-norm`` other than the threat model's, the columns carry the norm (``w2k_l2_acc@...``).
Per-example arrays ``dist`` (float64) and ``dist_attack`` (the attack that found each) go to the
per-example store; the attack runs chunk by chunk and an interrupted evaluation resumes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..attacks.knapsack import knapsack_accuracy
from ..attacks.minimal_norm import ENSEMBLE, CLEAN, NONE, DistanceSettings, minimal_distances
from ..attacks.pointwise import check_norm
from ..config import ThreatModel, parse_number_list, parse_threat_model, to_jsonable
from ..errors import UserError
from ..config.options import option, to_int, to_names
from .chunks import run_chunked_arrays
from .metric import METRICS, EvalContext, Metric, MetricOutput, option_values
from .values import MetricValue, wilson_interval
from .wdro import DEFAULT_DELTAS, budget_label

EPS_GRID = (0.25, 0.5, 0.75, 1.0, 1.25, 1.5)  # default pointwise grid, in multiples of the threat model's eps
QUANTILES = {"dist_q25": 0.25, "dist_median": 0.5, "dist_q75": 0.75}


@dataclass(frozen=True)
class DistancesOptions:
    dist_norm: str | None = option(None, "ground norm of the distances, Linf or L2 (default: the threat model's)")
    dist_attacks: tuple[str, ...] = option(
        ENSEMBLE, f"comma-separated minimal-norm ensemble from {', '.join(ENSEMBLE)} (default: all)")
    delta: tuple[float, ...] | None = None  # the budgets: wdro's --deltas (None: the threat model's defaults)
    dist_eps: tuple[float, ...] | None = option(
        None, "comma-separated eps grid of the pointwise curve (default: eps x 1/4, 1/2, 3/4, 1, 5/4, 3/2)")
    dist_steps: int = option(100, "FMN steps (default 100)")

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "DistancesOptions":
        threat = parse_threat_model(values.get("threat_model") or "Linf")
        if threat not in DEFAULT_DELTAS:
            raise UserError("the distances metric needs --threat-model Linf or L2")
        given = option_values(cls, values)
        norm = _canonical_norm(given["dist_norm"] or threat.value)
        raw = given["dist_attacks"]
        attacks = to_names(raw, "--dist-attacks")
        bad = [a for a in attacks if a not in ENSEMBLE]
        if bad or not attacks or attacks == ("refine",):
            raise UserError(f"--dist-attacks needs attacks from {', '.join(ENSEMBLE)} (refine only with another), "
                            f"got {raw!r}")
        deltas = _nonnegative_list(values.get("delta"), "--deltas")
        eps_grid = _nonnegative_list(given["dist_eps"], "--dist-eps")
        steps = to_int(given["dist_steps"], "--dist-steps", 1, 100_000)
        return cls(norm, attacks, deltas, eps_grid, steps)

    def record(self) -> dict[str, Any]:
        return {"norm": self.dist_norm, "attacks": list(self.dist_attacks), "deltas": to_jsonable(self.delta),
                "eps_grid": to_jsonable(self.dist_eps), "fmn_steps": self.dist_steps}


@METRICS.register("distances")
class DistancesMetric(Metric):
    """Minimal adversarial distances; knapsack W_2 accuracy; pointwise robustness curve; quantiles."""

    name = "distances"
    Options = DistancesOptions
    group = "distances metric (budgets: --deltas of the wdro metric)"
    shardable = True
    reads = ("delta", "threat_model")  # the budgets: wdro's --deltas

    def compute(self, ctx: EvalContext) -> MetricOutput:
        opts = self.options
        settings = DistanceSettings(norm=opts["norm"], attacks=tuple(opts["attacks"]), fmn_steps=opts["fmn_steps"])
        local = self._distances(ctx, settings)  # (no correct point: no attack runs, every distance is 0)
        dist = ctx.gather(local["dist"])
        if not (dist > 0).any():
            raise UserError(f"the model classifies none of the {dist.size} test examples correctly: minimal "
                            "distances are undefined (is it the right model for this data set?)")
        attack = ctx.gather(local["attack"])
        names = np.array((CLEAN, NONE) + ENSEMBLE)
        out = MetricOutput(per_example={"dist": dist, "dist_attack": names[attack]})
        same = opts["norm"] == ctx.threat_model.value
        out.values.update(knapsack_values(dist, opts["deltas"] or DEFAULT_DELTAS[ctx.threat_model],
                                          "w2k" if same else f"w2k_{opts['norm'].lower()}"))
        grid = opts["eps_grid"] or [ctx.eps * f for f in EPS_GRID]
        curve = knapsack_accuracy(dist, grid, p=math.inf)
        prefix = "robust" if same else f"robust_{opts['norm'].lower()}"
        for eps, acc in zip(grid, curve.accuracy):
            out.values[f"{prefix}_acc@{budget_label(eps)}"] = _accuracy_value(acc, curve.n)
        for name, q in QUANTILES.items():
            out.values[name] = MetricValue(float(np.quantile(dist, q, method="inverted_cdf")), int(dist.size))
        out.labels.update(dist_norm=opts["norm"], dist_attacks="+".join(opts["attacks"]) + f"-fmn{opts['fmn_steps']}")
        return out

    @staticmethod
    def _distances(ctx: EvalContext, settings: DistanceSettings) -> dict[str, np.ndarray]:
        codes = {name: i for i, name in enumerate((CLEAN, NONE) + ENSEMBLE)}
        x, y = ctx.data.x, ctx.data.y

        def chunk(start: int, stop: int) -> dict[str, np.ndarray]:
            result = minimal_distances(ctx.model, x[start:stop].to(ctx.device), y[start:stop].to(ctx.device),
                                       settings)
            return {"dist": result.distance.cpu().numpy(),
                    "attack": np.array([codes[a] for a in result.attack], dtype=np.int8)}

        state = ctx.state_dir / "distances.npz" if ctx.state_dir else None
        fields = {"dist": np.dtype(np.float64), "attack": np.dtype(np.int8)}
        return run_chunked_arrays(len(y), ctx.batch_size, chunk, fields, state, "distances", ctx.progress)


def knapsack_values(dist: np.ndarray, deltas, prefix: str = "w2k") -> dict[str, MetricValue]:
    """``<prefix>_acc@<delta>`` and ``<prefix>_int_acc@<delta>`` for every budget, from distances (N,)."""
    result = knapsack_accuracy(dist, list(deltas), p=2.0)
    values = {}
    for delta, acc, acc_int in zip(result.deltas, result.accuracy, result.accuracy_int):
        label = budget_label(float(delta))
        values[f"{prefix}_acc@{label}"] = _accuracy_value(acc, result.n)
        values[f"{prefix}_int_acc@{label}"] = _accuracy_value(acc_int, result.n)
    return values


def _accuracy_value(percent: float, n: int) -> MetricValue:
    """An accuracy in percent of n points (possibly fractional, for a mixture) with its Wilson interval."""
    lo, hi = wilson_interval(percent / 100.0 * n, n)
    return MetricValue(float(percent), n, lo, hi)


def _canonical_norm(text: str) -> str:
    try:
        return check_norm(str(text).strip())
    except ValueError:
        raise UserError(f"--dist-norm must be Linf or L2, got {text!r}") from None


def _nonnegative_list(raw, flag: str) -> tuple[float, ...] | None:
    if raw is None:
        return None
    values = parse_number_list(raw, flag)
    if not values or any(not (math.isfinite(v) and v >= 0) for v in values):
        raise UserError(f"{flag} values must be finite and >= 0, got {raw!r}")
    return values
