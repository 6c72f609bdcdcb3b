"""Best-known W_2 accuracy per budget: the lower of the W-PGD attack and the knapsack attack on minimal
distances (both are attacks, so each is an upper bound on the worst case; the lower one is the tighter).
The analogue of RobustBench's best-known robust accuracy."""

from __future__ import annotations

import math

ATTACKS = (("w-pgd", "w2_acc@"), ("knapsack", "w2k_acc@"))  # on a tie the first wins


def best_known(metrics: dict[str, dict]) -> tuple[dict[str, dict], dict[str, str]]:
    """``w2_best_acc@L`` (value, n, lo, hi of the lower attack) for every budget label L that W-PGD
    (``w2_acc@L``) or the knapsack attack (``w2k_acc@L``) measured, and the label ``w2_best_attack@L``
    (``w-pgd`` or ``knapsack``). ``metrics``: a record's metrics, name -> {value, n, lo?, hi?}."""
    candidates: dict[str, list[tuple[float, int, str, dict]]] = {}
    for order, (attack, prefix) in enumerate(ATTACKS):
        for name, val in metrics.items():
            if name.startswith(prefix) and _finite(val.get("value")):
                candidates.setdefault(name[len(prefix):], []).append((float(val["value"]), order, attack, val))
    values, labels = {}, {}
    for budget, found in candidates.items():
        _, _, attack, val = min(found, key=lambda c: (c[0], c[1]))
        values[f"w2_best_acc@{budget}"] = dict(val)
        labels[f"w2_best_attack@{budget}"] = attack
    return values, labels


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not math.isnan(value)
