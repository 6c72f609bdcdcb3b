"""Typed metric results: a value in percent with its 95% Wilson interval and sample size."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion, in percent."""
    if n <= 0:
        return (math.nan, math.nan)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


@dataclass(frozen=True)
class MetricValue:
    """One reported number. Accuracies are in percent with ``lo``/``hi`` the 95% Wilson interval;
    other quantities (losses, distances, bounds) have no interval."""

    value: float
    n: int
    lo: float | None = None
    hi: float | None = None

    @classmethod
    def accuracy(cls, flags: np.ndarray) -> "MetricValue":
        """From per-example correctness flags (bool array of shape (N,))."""
        flags = np.asarray(flags, dtype=bool)
        k, n = int(flags.sum()), int(flags.size)
        lo, hi = wilson_interval(k, n)
        return cls(100.0 * k / n if n else math.nan, n, lo, hi)

    def to_json(self) -> dict:
        out = {"value": self.value, "n": self.n}
        if self.lo is not None:
            out.update(lo=self.lo, hi=self.hi)
        return out

    @classmethod
    def from_json(cls, data: dict) -> "MetricValue":
        return cls(float(data["value"]), int(data["n"]), data.get("lo"), data.get("hi"))
