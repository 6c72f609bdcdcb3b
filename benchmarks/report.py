"""Print Markdown tables of records (accuracies with 95% intervals) for benchmarks/RESULTS.md.

    python benchmarks/report.py benchmarks/records --dataset mnist [--columns clean_acc,autoattack_acc]
        [--n 1000] [--by-seed] [--paired trades]

One row per (model, method, n_examples): a single record shows its value and 95% Wilson interval; several seeds
show mean ± standard deviation over seeds and, in brackets, the lowest and highest per-seed interval bound.
``--paired BASE`` adds, for metrics with per-example flags, a table of differences to method BASE on the same
test images: per seed (records matched by seed; a BASE with one seed, e.g. the pretrained model, pairs with
every seed), the accuracy difference in points from the per-example flags, with a 95% paired bootstrap interval
over the test images (2000 resamples); then the mean over seeds; then, where the method has two or more seeds,
the difference of the seed means with a 95% Welch t interval over seeds (the seed-to-seed variation the
per-seed intervals leave out; a one-seed BASE counts as fixed; also for metrics without per-example flags,
such as the generated-set rates and best-known W_2 accuracy).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

import numpy as np

from wdro_finetune.results.records import latest_by_id, load_per_example, read_records


def method_label(rec: dict) -> str:
    """The record's method, with the W_2 budget (and cap) of a W-DRO fine-tune."""
    training = rec.get("training") or {}
    method = rec["method"]
    if training.get("threat") == "w2":
        cap = training.get("w2_budget_cap")
        method += f" (delta {training['delta']:g}" + (f", cap {cap:g})" if cap else ")")
    return method


def summary_cell(values: list[dict]) -> str:
    """One record: value [lo, hi]; several: mean ± sd [min lo, max hi]."""
    if not values:
        return ""
    if len(values) == 1:
        v = values[0]
        return f"{v['value']:.1f}" + (f" [{v['lo']:.1f}, {v['hi']:.1f}]" if v.get("lo") is not None else "")
    xs = [v["value"] for v in values]
    bounds = [(v["lo"], v["hi"]) for v in values if v.get("lo") is not None]
    tail = f" [{min(b[0] for b in bounds):.1f}, {max(b[1] for b in bounds):.1f}]" if bounds else ""
    return f"{statistics.mean(xs):.1f} ± {statistics.stdev(xs):.1f}{tail}"


def summary_table(groups: dict, columns: list[str]) -> None:
    print("| model | method | seeds | n | " + " | ".join(columns) + " |")
    print("|---" * (4 + len(columns)) + "|")
    for key in sorted(groups):
        group = groups[key]
        cells = [summary_cell([r["metrics"][c] for r in group if c in r["metrics"]]) for c in columns]
        seeds = ",".join(str(r["seed"]) for r in sorted(group, key=lambda r: r["seed"]))
        print(f"| {key[0]} | {key[1]} | {seeds} | {key[2]} | " + " | ".join(cells) + " |")


def paired_difference(records_dir: str, rec: dict, base: dict, flag: str, rng: np.random.Generator):
    """Accuracy difference rec - base in points with a 95% paired bootstrap interval over examples."""
    flags_a, flags_b = load_per_example(records_dir, rec["record_id"]), load_per_example(records_dir, base["record_id"])
    if flag not in flags_a or flag not in flags_b:
        return None  # no per-example flags for this metric (e.g. generated-set rates of older records)
    a, b = flags_a[flag].astype(float), flags_b[flag].astype(float)
    diff = a - b
    boot = diff[rng.integers(0, len(diff), size=(2000, len(diff)))].mean(axis=1)
    return 100 * diff.mean(), 100 * np.quantile(boot, 0.025), 100 * np.quantile(boot, 0.975)


def seed_level_difference(values: list[float], base: list[float]) -> str:
    """Difference of seed means (points) with a 95% Welch t interval; empty below two seeds. A base of one
    value is a fixed baseline (an untrained model evaluated once): no variance on its side, df = n - 1."""
    from scipy import stats

    if len(values) < 2 or not base:
        return ""
    va = statistics.variance(values) / len(values)
    vb, vb_df = (statistics.variance(base) / len(base), len(base) - 1) if len(base) > 1 else (0.0, 1)
    d = statistics.mean(values) - statistics.mean(base)
    if va + vb == 0:
        return f"{d:+.2f} [{d:+.2f}, {d:+.2f}]"
    df = (va + vb) ** 2 / (va ** 2 / (len(values) - 1) + vb ** 2 / vb_df)
    half = stats.t.ppf(0.975, df) * (va + vb) ** 0.5
    return f"{d:+.2f} [{d - half:+.2f}, {d + half:+.2f}]"


def paired_table(records_dir: str, groups: dict, baseline: str, columns: list[str]) -> None:
    rng = np.random.default_rng(0)
    print(f"\nDifference to {baseline} (points; per seed with 95% paired bootstrap interval over test images; "
          "difference of seed means with 95% Welch t interval over seeds):\n")
    print("| model | method | n | metric | per seed | mean over seeds | seed means [95% t] |")
    print("|---|---|---|---|---|---|---|")
    for (model, method, n), group in sorted(groups.items()):
        base_group = groups.get((model, baseline, n), [])
        if method == baseline or not base_group:
            continue
        for col in columns:
            flag = col.removesuffix("_acc").removesuffix("_agree")
            # the base record of each seed that has this metric (a row may merge several evaluations)
            base = {r["seed"]: r for r in base_group if col in r["metrics"]}
            fixed = next(iter(base.values())) if len(base) == 1 else None  # one base seed: pairs with every seed
            cells, means = [], []
            for rec in sorted(group, key=lambda r: r["seed"]):
                other = base.get(rec["seed"], fixed)
                paired = (paired_difference(records_dir, rec, other, flag, rng)
                          if other is not None and col in rec["metrics"] else None)
                if paired:
                    d, lo, hi = paired
                    cells.append(f"s{rec['seed']}: {d:+.1f} [{lo:+.1f}, {hi:+.1f}]")
                    means.append(d)
            seeds = seed_level_difference([r["metrics"][col]["value"] for r in group if col in r["metrics"]],
                                          [r["metrics"][col]["value"] for r in base.values() if col in r["metrics"]])
            if means or seeds:
                mean = f"{statistics.mean(means):+.2f}" if means else ""
                print(f"| {model} | {method} | {n} | {col} | {'; '.join(cells)} | {mean} | {seeds} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--columns", default=None, help="metric names (default: all accuracies)")
    parser.add_argument("--n", type=int, default=None, help="only records with this many test examples")
    parser.add_argument("--by-seed", action="store_true", help="one row per record instead of mean over seeds")
    parser.add_argument("--paired", metavar="BASE", default=None, help="also print differences to method BASE")
    args = parser.parse_args()
    recs = [r for r in latest_by_id(read_records(args.records))
            if args.dataset in (None, r["dataset"]) and args.n in (None, r["n_examples"])]
    if not recs:
        print("no records", file=sys.stderr)
        return 1
    columns = args.columns.split(",") if args.columns else sorted(
        {k for r in recs for k in r["metrics"] if "_acc" in k}, key=lambda c: (c != "clean_acc", c))
    groups = defaultdict(list)
    for rec in recs:
        key = (rec["model"], method_label(rec), rec["n_examples"])
        groups[key + ((rec["seed"], rec["record_id"]) if args.by_seed else ())].append(rec)
    summary_table(groups, columns)
    if args.paired and not args.by_seed:
        paired_table(args.records, groups, args.paired, columns)
    return 0


if __name__ == "__main__":
    sys.exit(main())
