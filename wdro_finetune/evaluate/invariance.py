"""Invariance and sensitivity metrics (Tramer et al. 2020; METHODS.md section 6).

``invariance`` (MNIST only): agreement with the HUMAN labels on the four packaged human-labelled sets
(``inv_human_linf03``, ``inv_human_linf04``, ``inv_human_linf04_manual``, ``inv_human_l0``; the definitive
invariance metric), and on a generated set (``--inv-n`` first test images, ``--inv-eps``) the share of
predictions that stay at the SOURCE label (``inv_gen_source_rate``: Ovalle et al.'s "invariance accuracy",
lower is better since the true class changed) and the share equal to the TARGET label.
``fgsm``: accuracy on FGSM examples at eps (no random start), the sensitivity accuracy of those papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..attacks.pointwise import FGSM
from ..config import Dataset, parse_number
from ..errors import UserError
from ..config.options import option, to_int
from ..invariance.human_sets import list_human_sets, load_human_set
from .clean import predict
from .metric import METRICS, EvalContext, Metric, MetricOutput, option_values
from .values import MetricValue

GRIDS = ("full", "fast")  # the transform grids of the generated set


@dataclass(frozen=True)
class InvarianceOptions:
    inv_n: int = option(100, "generated invariance examples from the first N test images (default 100; 0: none)")
    inv_eps: float = option(0.3, "l_inf radius of the generated examples (default 0.3)")
    inv_grid: str = option("full", "transform grid (default full)", choices=GRIDS)
    inv_cache: str = option("cache/invariance", "cache folder of generated sets (default ./cache/invariance)")

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "InvarianceOptions":
        given = option_values(cls, values)
        n = to_int(given["inv_n"], "--inv-n")
        eps = parse_number(given["inv_eps"], "--inv-eps")
        if n < 0 or n > 10000 or not 0 < eps <= 1:
            raise UserError(f"--inv-n must be in 0..10000 and --inv-eps in (0, 1], got {n}, {eps}")
        grid = given["inv_grid"]
        if grid not in GRIDS:  # a config file bypasses argparse's choices
            raise UserError(f"--inv-grid must be full or fast, got {grid!r}")
        return cls(n, eps, grid, given["inv_cache"])

    def record(self) -> dict[str, Any]:
        return {"n": self.inv_n, "eps": self.inv_eps, "grid": self.inv_grid, "cache": self.inv_cache}


@METRICS.register("invariance")
class InvarianceMetric(Metric):
    """Human-label agreement on the packaged sets and source/target rates on a generated set."""

    name = "invariance"
    Options = InvarianceOptions
    group = "invariance metric (MNIST)"

    @classmethod
    def output_dirs(cls, options: dict[str, Any]) -> list[str]:
        return [options["cache"]] if options["n"] else []

    def compute(self, ctx: EvalContext) -> MetricOutput:
        if ctx.dataset != Dataset.MNIST:
            raise UserError("the invariance metric exists for MNIST only")
        out = MetricOutput()
        for name in list_human_sets():
            hs = load_human_set(name)
            pred = predict(ctx.model, torch.from_numpy(hs.x), ctx.device, ctx.batch_size).numpy()
            flags = pred == hs.human_label
            out.values[f"{name}_agree"] = MetricValue.accuracy(flags)
            out.per_example[name] = flags
        if self.options["n"]:
            self._generated(ctx, out)
        return out

    def _generated(self, ctx: EvalContext, out: MetricOutput) -> None:
        from ..invariance.generated import generated_set

        opts = self.options
        inv = generated_set("test", opts["n"], opts["eps"], opts["grid"], opts["cache"])
        pred = predict(ctx.model, torch.from_numpy(np.asarray(inv.x))[:, None], ctx.device, ctx.batch_size).numpy()
        for side, label in (("source", inv.source_label), ("target", inv.target_label)):
            flags = pred == label  # (n,) bool, stored so that two models compare paired on the same set
            out.values[f"inv_gen_{side}_rate"] = MetricValue.accuracy(flags)
            out.per_example[f"inv_gen_{side}_rate"] = flags
        out.labels["inv_gen"] = f"mnist-test[:{opts['n']}] eps={opts['eps']:g} grid={opts['grid']}"


@METRICS.register("fgsm")
class FgsmMetric(Metric):
    """Accuracy on FGSM examples at the pointwise eps (one signed-gradient step, no random start)."""

    name = "fgsm"
    shardable = True

    def compute(self, ctx: EvalContext) -> MetricOutput:
        flags = []
        attack = FGSM(eps=ctx.eps, norm=ctx.threat_model.value)
        for start in range(0, len(ctx.data.y), ctx.batch_size):
            x = ctx.data.x[start:start + ctx.batch_size].to(ctx.device)
            y = ctx.data.y[start:start + ctx.batch_size].to(ctx.device)
            x_adv = attack(ctx.model, x, y)
            with torch.no_grad():
                flags.append((ctx.model(x_adv).argmax(1) == y).cpu())
        flags = ctx.gather(torch.cat(flags).numpy())
        return MetricOutput(values={"fgsm_acc": MetricValue.accuracy(flags)}, per_example={"fgsm": flags})
