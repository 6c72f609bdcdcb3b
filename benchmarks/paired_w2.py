"""Best-known W_2 accuracy of every job of a sweep, and its paired difference to a reference job, with 95% paired
bootstrap intervals (the same resampled test images for both models: W-PGD's per-example flags and the knapsack
recomputed on the resampled minimal distances; best-known = the lower of the two, per resample).

    python benchmarks/paired_w2.py benchmarks/exp_rejudge_mnist.yaml --reference pretrained [--resamples 2000]
    python benchmarks/paired_w2.py leaderboards/records --model mnist-smallcnn --reference pretrained

With a records folder instead of a sweep file, the jobs are the leaderboard rows of ``--model`` (a row merges
the records of one set of weights, e.g. a first evaluation and a later one with minimal distances); rows
without both W-PGD and distances are left out.
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np

from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.results.formatting import budget_value
from wdro_finetune.results.records import load_per_example, read_records
from wdro_finetune.results.rows import build_rows
from wdro_finetune.workflows.sweep import load_sweep


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", help="a sweep file, or a records folder (leaderboard rows of --model)")
    parser.add_argument("--model", help="with a records folder: the model whose rows are compared")
    parser.add_argument("--reference", required=True,
                        help="the reference job: its sweep method name (with ' seed=S' if the method runs several)")
    parser.add_argument("--resamples", type=int, default=2000)
    args = parser.parse_args()
    jobs, arrays_of = _rows(args.sweep, args.model) if Path(args.sweep).is_dir() else _sweep_jobs(args.sweep)
    ref = jobs[args.reference]
    budgets = sorted((k.partition("@")[2] for k in ref if k.startswith("w2k_acc@")), key=budget_value)
    ref_arrays = arrays_of(args.reference)
    n = len(ref_arrays["dist"])
    idx = np.random.default_rng(0).integers(0, n, (args.resamples, n))
    print("| job | clean | " + " | ".join(f"best W_2 @ {b} (W-PGD / knapsack)" for b in budgets) + " | "
          + " | ".join(f"best-known diff @ {b} [95%]" for b in budgets) + " |")
    print("|---" * (2 + 2 * len(budgets)) + "|")
    for name, m in sorted(jobs.items()):
        arrays = arrays_of(name)
        cells = [f"{m[f'w2_best_acc@{b}']['value']:.1f} ({m[f'w2_acc@{b}']['value']:.1f} / {m[f'w2k_acc@{b}']['value']:.1f})"
                 for b in budgets]
        diffs = [_paired(arrays, ref_arrays, b, idx) for b in budgets]
        print(f"| {name} | {m['clean_acc']['value']:.1f} | " + " | ".join(cells) + " | " + " | ".join(diffs) + " |")


def _sweep_jobs(path: str) -> tuple[dict[str, dict], callable]:
    """{job label: metrics} of a sweep's records, and label -> per-example arrays. The label is the sweep
    method name, with `` seed=S`` where the method runs several seeds."""
    sweep = load_sweep(path, check_device=False)
    seeds = Counter(job.method for job in sweep.jobs)
    names = {job.job_id: job.method + (f" seed={job.seed}" if seeds[job.method] > 1 else "") for job in sweep.jobs}
    recs = {names[r["job_id"]]: r for r in read_records(sweep.records) if r.get("job_id") in names}
    return ({name: r["metrics"] for name, r in recs.items()},
            lambda name: load_per_example(sweep.records, recs[name]["record_id"]))


def _rows(records: str, model: str) -> tuple[dict[str, dict], callable]:
    """{method: merged metrics} of the leaderboard rows of ``model`` with W-PGD and distances, and
    method -> the rows' per-example arrays merged in record order."""
    rows = [row for board in build_rows(records).values() for row in board
            if row.fields["model"] == model and any(k.startswith("w2k_acc@") for k in row.metrics)
            and any(k.startswith("w2_acc@") for k in row.metrics)]
    by_method = {row.fields["method"]: row for row in rows}

    def arrays(name: str) -> dict:
        merged: dict = {}
        for rec in by_method[name].records:
            merged.update(load_per_example(records, rec["record_id"]))
        return merged
    return {name: row.metrics for name, row in by_method.items()}, arrays


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
