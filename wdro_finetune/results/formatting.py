"""Fixed text for numbers in leaderboards: accuracies with 2 decimals, eps and budgets as fractions."""

from __future__ import annotations

import math
from fractions import Fraction


def eps_text(value: float) -> str:
    """``0.3`` for short decimals, ``8/255`` for small fractions, else 6 significant digits."""
    if value == round(value, 3):
        return f"{value:g}"
    frac = Fraction(value).limit_denominator(1024)
    if abs(float(frac) - value) <= 1e-9 * max(1.0, abs(value)):
        return f"{frac.numerator}/{frac.denominator}"
    return f"{value:.6g}"


def budget_value(label: str) -> float:
    """The number of a budget label (``1/255`` -> 0.00392...); inf if it is not one."""
    try:
        return float(Fraction(label))
    except (ValueError, ZeroDivisionError):
        return math.inf


def is_accuracy(column: str) -> bool:
    """Columns in percent (accuracies, rates, agreements) and their interval ends."""
    base = column.removesuffix("_lo").removesuffix("_hi")
    return base.endswith(("_acc", "_rate", "_agree")) or "_acc@" in base


def format_cell(column: str, value: object) -> str:
    """Fixed CSV text for a value: accuracies with 2 decimals, other floats with 6 significant digits."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if is_accuracy(column):
        return f"{value:.2f}"
    return f"{value:.6g}"
