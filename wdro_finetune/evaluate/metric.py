"""The metric plug-in contract and registry. A metric is a class registered under the name used
in ``--metrics``; it may declare its own options (and CLI flags) and may keep per-batch state in
``ctx.state_dir`` so an interrupted evaluation resumes where it stopped."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from torch import nn

from ..config import Dataset, ThreatModel
from ..data.datasets import DataSplit
from ..registry import Registry
from .values import MetricValue


def _whole(flags: np.ndarray) -> np.ndarray:
    return np.asarray(flags)


@dataclass
class EvalContext:
    """Everything a metric needs. ``data.x``: (N, C, H, W) in [0, 1] on the CPU.

    For a ``shardable`` metric under torchrun, ``data`` is this rank's contiguous shard and
    ``gather(local (n_rank, ...)) -> (N, ...)`` concatenates an array over ranks in rank order
    (the identity in one process).
    """

    model: nn.Module
    data: DataSplit
    dataset: Dataset
    threat_model: ThreatModel
    eps: float
    device: str
    batch_size: int
    seed: int
    state_dir: Path | None
    progress: bool = False
    per_example: dict[str, np.ndarray] = field(default_factory=dict)
    gather: Callable[[np.ndarray], np.ndarray] = _whole


@dataclass
class MetricOutput:
    """Columns a metric adds to a record: numbers (``values``), text (``labels``, e.g. which
    AutoAttack version ran), and per-example arrays kept beside the record."""

    values: dict[str, MetricValue] = field(default_factory=dict)
    labels: dict[str, str] = field(default_factory=dict)
    per_example: dict[str, np.ndarray] = field(default_factory=dict)


class Metric:
    """Base class. Subclasses set ``name``, optionally ``add_arguments`` / ``options_from_args``.

    ``shardable = True``: under torchrun each rank gets a shard of the examples (see
    :class:`EvalContext`) and the metric returns values and per-example arrays of the WHOLE set.
    """

    name: ClassVar[str]
    shardable: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ()  # options it uses that another metric declares (e.g. ``delta``)

    def __init__(self, **options: Any):
        self.options = options

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Add this metric's CLI flags (default: none)."""

    @classmethod
    def options_from(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Validated options for this metric from the resolved command options (default: none)."""
        return {}

    @classmethod
    def output_dirs(cls, options: dict[str, Any]) -> list[str]:
        """Folders this metric writes to (checked before the evaluation starts; default: none)."""
        return []

    def compute(self, ctx: EvalContext) -> MetricOutput:
        raise NotImplementedError


METRICS: Registry[type[Metric]] = Registry("metric")
