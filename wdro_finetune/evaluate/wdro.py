"""The ``wdro`` metric: Wasserstein-distributional robustness (Bai, He, Jiang, Obloj 2023).

For each budget delta: W-PGD (or W-FGSM) over the WHOLE evaluation set, reporting the lowest accuracy
over the iterates (``w2_acc@<delta>``, with interval), the highest mean loss (``w2_loss@<delta>``) and
the achieved distance (``w2_dist@<delta>``); plus the attack-free sensitivity figures ``upsilon`` and
the accuracy-ratio bounds ``w2_Ru@<delta>``, ``w2_Rl@<delta>`` (for the CE loss; E_Q[J] from W-FGSM
with CE). The attack loss defaults to ReDLR. ``--wdro-p inf`` gives the pointwise
(W_inf) figures under a ``winf_`` prefix. Finished budgets are kept in the metric's state folder, so
an interrupted evaluation redoes only the budgets that had not finished.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, fields
from fractions import Fraction
from typing import Any

import numpy as np

from ..attacks.bounds import accuracy_ratio_bounds, clean_sensitivity
from ..attacks.losses import LOSS_NAMES
from ..attacks.wasserstein_eval import KINDS as ATTACK_KINDS, WPGD
from ..config import ThreatModel, parse_number_list, parse_threat_model, to_jsonable
from ..errors import UserError
from ..config.options import check_bounds, check_choices, option, to_int
from ..utils.fileio import atomic_write_text
from ..utils.progress import progress_bar
from .metric import METRICS, EvalContext, Metric, MetricOutput, option_values
from .values import MetricValue

DEFAULT_DELTAS = {ThreatModel.LINF: (1 / 510, 2 / 510, 4 / 510), ThreatModel.L2: (1 / 32, 2 / 32, 4 / 32)}
P_VALUES = ("2", "inf")


def budget_label(delta: float) -> str:
    """``1/255`` for budgets that are small fractions, else 6 significant digits."""
    frac = Fraction(delta).limit_denominator(1024)
    if frac.numerator and abs(float(frac) - delta) <= 1e-12 * max(1.0, abs(delta)):
        return f"{frac.numerator}/{frac.denominator}" if frac.denominator != 1 else str(frac.numerator)
    return f"{delta:.6g}"


@dataclass(frozen=True)
class WdroOptions:
    wdro_p: str = option("2", "W_2 (default) or W_inf (pointwise)", choices=P_VALUES)
    delta: tuple[float, ...] | None = option(
        None, "comma-separated W_2 budgets in (0,1] pixel units (default 1/510,2/510,4/510 Linf; 1/32,2/32,4/32 L2); "
              "alias --delta; key delta in config and sweep files", flag="--deltas", aliases=("--delta",),
        metavar="DELTAS", gt=0, le=1)
    wdro_loss: str = option("redlr", "W-PGD attack loss (default redlr, which spends no budget on misclassified "
                            "points); the bounds always use CE", choices=LOSS_NAMES)
    wdro_steps: int = option(50, "W-PGD steps T (default 50)", ge=1)
    wdro_attack: str = option("pgd", "W-PGD (default) or W-FGSM", choices=ATTACK_KINDS)

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "WdroOptions":
        if parse_threat_model(values.get("threat_model") or "Linf") not in DEFAULT_DELTAS:  # before any loading
            raise UserError("the wdro metric needs --threat-model Linf or L2")
        given = option_values(cls, values)
        p, loss, attack = str(given["wdro_p"]), given["wdro_loss"], given["wdro_attack"]
        check_choices(fields(cls), {"wdro_p": p, "wdro_loss": loss, "wdro_attack": attack})
        deltas = given["delta"]
        deltas = parse_number_list(deltas, "--deltas") if deltas is not None else None
        steps = to_int(given["wdro_steps"], "--wdro-steps")  # 0 is a value (an error below)
        check_bounds(fields(cls), {"delta": deltas, "wdro_steps": steps})
        return cls(p, deltas, loss, steps, attack)

    def record(self) -> dict[str, Any]:
        return {"p": self.wdro_p, "deltas": to_jsonable(self.delta), "loss": self.wdro_loss,
                "steps": self.wdro_steps, "attack": self.wdro_attack}


@METRICS.register("wdro")
class WdroMetric(Metric):
    """W_2 (or W_inf) distributional robust accuracy, loss and distance per budget, with bounds."""

    name = "wdro"
    Options = WdroOptions
    shardable = True

    def compute(self, ctx: EvalContext) -> MetricOutput:
        opts = self.options
        if ctx.threat_model not in DEFAULT_DELTAS:
            raise UserError("the wdro metric needs --threat-model Linf or L2")
        p = 2.0 if opts["p"] == "2" else math.inf
        prefix = "w2" if opts["p"] == "2" else "winf"
        deltas = opts["deltas"] or list(DEFAULT_DELTAS[ctx.threat_model])
        norm = ctx.threat_model.value
        x, y = ctx.data.x, ctx.data.y
        common = dict(p=p, norm=norm, batch_size=ctx.batch_size, device=ctx.device)
        stats = clean_sensitivity(ctx.model, x, y, loss="ce", **common)
        out = MetricOutput()
        out.values["upsilon" if prefix == "w2" else "upsilon_inf"] = MetricValue(stats.upsilon, stats.n)
        for delta in deltas:
            label = budget_label(delta)
            done = self._cached(ctx, prefix, label)
            if done is None:
                done = self._one_budget(ctx, delta, label, prefix, common, stats)
            flags = ctx.gather(np.asarray(done.pop("flags"), dtype=bool))
            out.values[f"{prefix}_acc@{label}"] = MetricValue.accuracy(flags)
            out.values.update({k: MetricValue.from_json(v) for k, v in done.items()})
            out.per_example[f"{prefix}@{label}"] = flags
        out.labels[f"{prefix}_attack"] = f"{opts['attack']}-{opts['loss']}-T{opts['steps']}"
        return out

    def _one_budget(self, ctx: EvalContext, delta: float, label: str, prefix: str, common: dict, stats) -> dict:
        """Dataset-wide loss, distance and bounds (JSON) and this rank's correctness ``flags``."""
        opts = self.options
        with progress_bar(opts["steps"], f"{prefix} delta={label}", ctx.progress, unit="step", leave=False) as bar:
            attack = WPGD(delta=delta, steps=opts["steps"], attack=opts["attack"], loss=opts["loss"], **common)
            result = attack.run(ctx.model, ctx.data.x, ctx.data.y, progress=lambda s, t: bar.update(1))
        fgsm = WPGD(delta=delta, steps=1, attack="fgsm", loss="ce", **common).run(ctx.model, ctx.data.x, ctx.data.y)
        bounds = accuracy_ratio_bounds(stats, delta, attacked_loss=fgsm.loss_per_iterate[-1],
                                       attacked_accuracy=result.accuracy)
        flags = result.correct.cpu().numpy().astype(bool)
        n = result.n
        done = {f"{prefix}_loss@{label}": MetricValue(result.max_loss, n).to_json(),
                f"{prefix}_dist@{label}": MetricValue(result.distance, n).to_json(),
                f"{prefix}_Ru@{label}": MetricValue(bounds.upper, n).to_json(),
                f"{prefix}_Rl@{label}": MetricValue(bounds.lower, n).to_json()}
        if ctx.state_dir is not None:
            atomic_write_text(ctx.state_dir / f"wdro_{prefix}_{label.replace('/', '_')}.json",
                              json.dumps({**done, "flags": flags.tolist()}))
        return {**done, "flags": flags}

    @staticmethod
    def _cached(ctx: EvalContext, prefix: str, label: str) -> dict | None:
        if ctx.state_dir is None:
            return None
        path = ctx.state_dir / f"wdro_{prefix}_{label.replace('/', '_')}.json"
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        return data if len(data.get("flags", [])) == len(ctx.data.y) else None
