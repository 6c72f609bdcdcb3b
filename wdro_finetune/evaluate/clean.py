"""Clean accuracy."""

from __future__ import annotations

import numpy as np

from ..models.outputs import predict
from .metric import METRICS, EvalContext, Metric, MetricOutput
from .values import MetricValue


@METRICS.register("clean")
class CleanAccuracy(Metric):
    """Share of test examples classified correctly (percent, Wilson interval)."""

    name = "clean"
    shardable = True

    def compute(self, ctx: EvalContext) -> MetricOutput:
        flags = ctx.gather((predict(ctx.model, ctx.data.x, ctx.device, ctx.batch_size) == ctx.data.y).numpy())
        return MetricOutput(values={"clean_acc": MetricValue.accuracy(flags)}, per_example={"clean": flags})
