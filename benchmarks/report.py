"""Print a Markdown table of records (accuracies with 95% intervals) for benchmarks/RESULTS.md.

    python benchmarks/report.py benchmarks/records --dataset mnist [--columns clean_acc,autoattack_acc]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict

from wdro_finetune.results.records import latest_by_id, read_records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("records")
    parser.add_argument("--dataset", default=None)
    parser.add_argument("--columns", default=None, help="metric names (default: all accuracies)")
    parser.add_argument("--by-seed", action="store_true", help="one row per record instead of mean over seeds")
    args = parser.parse_args()
    recs = [r for r in latest_by_id(read_records(args.records)) if args.dataset in (None, r["dataset"])]
    if not recs:
        print("no records", file=sys.stderr)
        return 1
    columns = args.columns.split(",") if args.columns else sorted(
        {k for r in recs for k in r["metrics"] if "_acc" in k}, key=lambda c: (c != "clean_acc", c))
    groups = defaultdict(list)
    for rec in recs:
        training = rec.get("training") or {}
        method = rec["method"]
        if training.get("threat") == "w2":
            cap = training.get("w2_budget_cap")
            method += f" (delta {training['delta']:g}" + (f", cap {cap:g})" if cap else ")")
        key = (rec["model"], method) + ((rec["seed"], rec["record_id"]) if args.by_seed else ())
        groups[key].append(rec)
    print("| model | method | seeds | n | " + " | ".join(columns) + " |")
    print("|---" * (4 + len(columns)) + "|")
    for key in sorted(groups):
        group = groups[key]
        cells = []
        for col in columns:
            vals = [r["metrics"][col] for r in group if col in r["metrics"]]
            if not vals:
                cells.append("")
            elif len(vals) == 1 and vals[0].get("lo") is not None:
                v = vals[0]
                cells.append(f"{v['value']:.1f} [{v['lo']:.1f}, {v['hi']:.1f}]")
            else:
                xs = [v["value"] for v in vals]
                spread = f" ± {statistics.stdev(xs):.1f}" if len(xs) > 1 else ""
                cells.append(f"{statistics.mean(xs):.1f}{spread}")
        seeds = ",".join(str(r["seed"]) for r in group)
        print(f"| {key[0]} | {key[1]} | {seeds} | {group[0]['n_examples']} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
