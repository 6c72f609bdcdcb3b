"""Invariance and sensitivity metrics (Tramer et al. 2020; METHODS.md section 6).

``invariance`` (MNIST only): agreement with the HUMAN labels on the four packaged human-labelled sets
(``inv_human_linf03``, ``inv_human_linf04``, ``inv_human_linf04_manual``, ``inv_human_l0``; the definitive
invariance metric), and on a generated set (``--inv-n`` first test images, ``--inv-eps``) the share of
predictions that stay at the SOURCE label (``inv_gen_source_rate``: Ovalle et al.'s "invariance accuracy",
lower is better since the true class changed) and the share equal to the TARGET label.
``fgsm``: accuracy on FGSM examples at eps (no random start), the sensitivity accuracy of those papers.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch

from ..attacks.pointwise import fgsm
from ..config import Dataset, parse_number
from ..errors import UserError
from ..config.options import to_int
from ..invariance.human_sets import list_human_sets, load_human_set
from .clean import predict
from .metric import METRICS, EvalContext, Metric, MetricOutput
from .values import MetricValue


@METRICS.register("invariance")
class InvarianceMetric(Metric):
    """Human-label agreement on the packaged sets and source/target rates on a generated set."""

    name = "invariance"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        g = parser.add_argument_group("invariance metric (MNIST)")
        g.add_argument("--inv-n", default=None,
                       help="generated invariance examples from the first N test images (default 100; 0: none)")
        g.add_argument("--inv-eps", default=None, help="l_inf radius of the generated examples (default 0.3)")
        g.add_argument("--inv-grid", default=None, choices=["full", "fast"], help="transform grid (default full)")
        g.add_argument("--inv-cache", default=None, help="cache folder of generated sets (default ./cache/invariance)")

    @classmethod
    def options_from(cls, values: dict[str, Any]) -> dict[str, Any]:
        n = to_int(values["inv_n"], "--inv-n") if values.get("inv_n") is not None else 100
        eps = parse_number(values.get("inv_eps") or 0.3, "--inv-eps")
        if n < 0 or n > 10000 or not 0 < eps <= 1:
            raise UserError(f"--inv-n must be in 0..10000 and --inv-eps in (0, 1], got {n}, {eps}")
        grid = values.get("inv_grid") or "full"
        if grid not in ("full", "fast"):  # a config file bypasses argparse's choices
            raise UserError(f"--inv-grid must be full or fast, got {grid!r}")
        return {"n": n, "eps": eps, "grid": grid,
                "cache": values.get("inv_cache") or "cache/invariance"}

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
        out.values["inv_gen_source_rate"] = MetricValue.accuracy(pred == inv.source_label)
        out.values["inv_gen_target_rate"] = MetricValue.accuracy(pred == inv.target_label)
        out.labels["inv_gen"] = f"mnist-test[:{opts['n']}] eps={opts['eps']:g} grid={opts['grid']}"


@METRICS.register("fgsm")
class FgsmMetric(Metric):
    """Accuracy on FGSM examples at the pointwise eps (one signed-gradient step, no random start)."""

    name = "fgsm"
    shardable = True

    def compute(self, ctx: EvalContext) -> MetricOutput:
        flags = []
        for start in range(0, len(ctx.data.y), ctx.batch_size):
            x = ctx.data.x[start:start + ctx.batch_size].to(ctx.device)
            y = ctx.data.y[start:start + ctx.batch_size].to(ctx.device)
            x_adv = fgsm(ctx.model, x, y, eps=ctx.eps, norm=ctx.threat_model.value)
            with torch.no_grad():
                flags.append((ctx.model(x_adv).argmax(1) == y).cpu())
        flags = ctx.gather(torch.cat(flags).numpy())
        return MetricOutput(values={"fgsm_acc": MetricValue.accuracy(flags)}, per_example={"fgsm": flags})
