"""How much W-PGD overstates W_2 accuracy: for every leaderboard row that has both a W-PGD evaluation and
minimal distances, per budget: W-PGD accuracy, knapsack accuracy, and their difference with a 95% paired
bootstrap interval (the same resampled test images for both: W-PGD's per-example flags, the knapsack recomputed
on the resampled distances).

    python benchmarks/wpgd_vs_knapsack.py leaderboards/records [--resamples 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.results.formatting import budget_value
from wdro_finetune.results.records import load_per_example
from wdro_finetune.results.rows import build_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("records")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    print("| model | method | n | delta | W-PGD | knapsack | W-PGD - knapsack [95% paired bootstrap] |")
    print("|---|---|---|---|---|---|---|")
    for row in [r for board in build_rows(args.records).values() for r in board]:
        arrays = {}
        for rec in row.records:
            arrays.update(load_per_example(args.records, rec["record_id"]))
        if "dist" not in arrays:
            continue
        budgets = sorted((k.partition("@")[2] for k in row.metrics if k.startswith("w2_acc@")), key=budget_value)
        for label in budgets:
            if f"w2@{label}" not in arrays:
                continue
            _print_budget(row, label, arrays[f"w2@{label}"], arrays["dist"], args.resamples)


def _print_budget(row, label: str, flags: np.ndarray, dist: np.ndarray, resamples: int) -> None:
    delta = budget_value(label)
    wpgd, knap = 100 * flags.mean(), knapsack_accuracy(dist, [delta]).accuracy[0]
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(resamples):
        idx = rng.integers(0, len(dist), len(dist))
        diffs.append(100 * flags[idx].mean() - knapsack_accuracy(dist[idx], [delta]).accuracy[0])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    print(f"| {row.fields['model']} | {row.fields['method']} | {len(dist)} | {label} | {wpgd:.1f} | {knap:.1f} | "
          f"{wpgd - knap:+.1f} [{lo:+.1f}, {hi:+.1f}] |")


if __name__ == "__main__":
    main()
