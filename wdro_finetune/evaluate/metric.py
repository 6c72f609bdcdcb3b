"""The metric plug-in contract and registry. A metric is a class registered under the name used
in ``--metrics``; it may declare its own options (a frozen ``Options`` dataclass of
:func:`~wdro_finetune.config.options.option` fields: flag, help, default and choices written once) and may
keep per-batch state in ``ctx.state_dir`` so an interrupted evaluation resumes where it stopped."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np
from torch import nn

from ..config import Dataset, ThreatModel
from ..config.options import add_options, option_fields
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


@dataclass(frozen=True)
class NoOptions:
    """The options of a metric without any."""

    @classmethod
    def parse(cls, values: dict[str, Any]) -> "NoOptions":
        return cls()

    def record(self) -> dict[str, Any]:
        return {}


def option_values(cls: type, values: dict[str, Any]) -> dict[str, Any]:
    """Every :func:`~wdro_finetune.config.options.option` field of ``cls``: its value in ``values`` where set
    (not None and not empty), else the field's default; values are not converted yet."""
    out = {}
    for f in option_fields(cls):
        value = values.get(f.name)
        unset = value is None or (isinstance(value, (str, list, tuple)) and not value)
        out[f.name] = f.default if unset else value
    return out


class Metric:
    """Base class. Subclasses set ``name`` and, with options, ``Options``: a frozen dataclass whose
    :func:`~wdro_finetune.config.options.option` fields are the flags (in an argument group titled ``group``),
    with ``Options.parse(values) -> Options`` (validation, one-line UserErrors) and ``record() -> dict`` (the
    metric's entry of the record's ``metric_options``, also what ``__init__`` receives).

    ``shardable = True``: under torchrun each rank gets a shard of the examples (see
    :class:`EvalContext`) and the metric returns values and per-example arrays of the WHOLE set.
    """

    name: ClassVar[str]
    Options: ClassVar[type] = NoOptions
    group: ClassVar[str] = ""  # title of the flags' argument group (default: "<name> metric")
    shardable: ClassVar[bool] = False
    reads: ClassVar[tuple[str, ...]] = ()  # options it uses that another metric declares (e.g. ``delta``)

    def __init__(self, **options: Any):
        self.options = options

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """This metric's CLI flags, made from the fields of ``Options``."""
        if option_fields(cls.Options):
            add_options(parser.add_argument_group(cls.group or f"{cls.name} metric"), cls.Options)

    @classmethod
    def options_from(cls, values: dict[str, Any]) -> dict[str, Any]:
        """Validated options for this metric from the resolved command options (its record entry)."""
        return cls.Options.parse(values).record()

    @classmethod
    def output_dirs(cls, options: dict[str, Any]) -> list[str]:
        """Folders this metric writes to (checked before the evaluation starts; default: none)."""
        return []

    def compute(self, ctx: EvalContext) -> MetricOutput:
        raise NotImplementedError


METRICS: Registry[type[Metric]] = Registry("metric")
