"""Helpers of the results tests, a plain module (not ``conftest``: ``from conftest import`` finds whichever
conftest.py was imported first, e.g. tests/attacks' when both folders are collected)."""

from __future__ import annotations

import numpy as np

from wdro_finetune.evaluate.values import MetricValue


def accuracy(correct: int, n: int) -> dict:
    """A metric entry as records hold it: value, n and the Wilson interval (``correct`` of ``n`` examples)."""
    return MetricValue.accuracy(np.arange(n) < correct).to_json()
