"""Best-known W_2 accuracy of every job of a sweep, and its paired difference to a reference job, with 95% paired
bootstrap intervals (the same resampled test images for both models: W-PGD's per-example flags and the knapsack
recomputed on the resampled minimal distances; best-known = the lower of the two, per resample).

    python benchmarks/paired_w2.py benchmarks/exp_rejudge_mnist.yaml --reference pretrained [--resamples 2000]
"""

from __future__ import annotations

import argparse

import numpy as np

from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.results.formatting import budget_value
from wdro_finetune.results.records import load_per_example, read_records
from wdro_finetune.workflows.sweep import load_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep")
    parser.add_argument("--reference", required=True, help="the sweep method name of the reference job")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    sweep = load_sweep(args.sweep, check_device=False)
    names = {job.job_id: job.method for job in sweep.jobs}
    jobs = {names[r["job_id"]]: r for r in read_records(sweep.records) if r.get("job_id") in names}
    ref = jobs[args.reference]
    budgets = sorted((k.partition("@")[2] for k in ref["metrics"] if k.startswith("w2k_acc@")), key=budget_value)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, ref["n_examples"], (args.resamples, ref["n_examples"]))
    print("| job | clean | " + " | ".join(f"best W_2 @ {b} (W-PGD / knapsack)" for b in budgets) + " | "
          + " | ".join(f"best-known diff @ {b} [95%]" for b in budgets) + " |")
    print("|---" * (2 + 2 * len(budgets)) + "|")
    ref_arrays = load_per_example(sweep.records, ref["record_id"])
    for name, rec in jobs.items():
        arrays = load_per_example(sweep.records, rec["record_id"])
        m = rec["metrics"]
        cells = [f"{m[f'w2_best_acc@{b}']['value']:.1f} ({m[f'w2_acc@{b}']['value']:.1f} / {m[f'w2k_acc@{b}']['value']:.1f})"
                 for b in budgets]
        diffs = [_paired(arrays, ref_arrays, b, idx) for b in budgets]
        print(f"| {name} | {m['clean_acc']['value']:.1f} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")


def _paired(arrays: dict, ref: dict, label: str, idx: np.ndarray) -> str:
    delta = budget_value(label)
    point = _best(arrays, label, delta, slice(None)) - _best(ref, label, delta, slice(None))
    diffs = [_best(arrays, label, delta, i) - _best(ref, label, delta, i) for i in idx]
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return f"{point:+.1f} [{lo:+.1f}, {hi:+.1f}]"


def _best(arrays: dict, label: str, delta: float, rows) -> float:
    """Best-known W_2 accuracy (percent) of the examples ``rows``."""
    wpgd = 100 * arrays[f"w2@{label}"][rows].mean()
    return min(wpgd, knapsack_accuracy(arrays["dist"][rows], [delta]).accuracy[0])


if __name__ == "__main__":
    main()
