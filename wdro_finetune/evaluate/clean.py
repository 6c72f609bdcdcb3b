"""Clean accuracy."""

from __future__ import annotations

import numpy as np
import torch

from .metric import METRICS, EvalContext, Metric, MetricOutput
from .values import MetricValue


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, device: str, batch_size: int) -> torch.Tensor:
    """Predicted labels (N,) on the CPU for x: (N, C, H, W) in [0, 1] (model in its current mode)."""
    preds = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)


@METRICS.register("clean")
class CleanAccuracy(Metric):
    """Share of test examples classified correctly (percent, Wilson interval)."""

    name = "clean"
    shardable = True

    def compute(self, ctx: EvalContext) -> MetricOutput:
        flags = ctx.gather((predict(ctx.model, ctx.data.x, ctx.device, ctx.batch_size) == ctx.data.y).numpy())
        return MetricOutput(values={"clean_acc": MetricValue.accuracy(flags)}, per_example={"clean": flags})
