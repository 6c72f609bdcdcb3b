"""AutoAttack check of the triplet experiment's models (FGSM-trained models can mask gradients).

For every record of ``benchmarks/exp_triplet_mnist.yaml`` (in benchmarks/records_triplet), evaluate the same
fine-tuned checkpoint with AutoAttack apgd-ce + apgd-t at eps 0.3 on the first N MNIST test images and append
the record to benchmarks/records_triplet_aa (idempotent: models already evaluated are skipped).

    python benchmarks/exp_triplet_autoattack.py [--n 200]
    python benchmarks/report.py benchmarks/records_triplet_aa --dataset mnist --columns clean_acc,autoattack_acc
"""

from __future__ import annotations

import argparse
import sys

from wdro_finetune.evaluate.runner import evaluate, make_eval_config
from wdro_finetune.results.records import latest_by_id, read_records

SOURCE, TARGET = "benchmarks/records_triplet", "benchmarks/records_triplet_aa"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200, help="first N MNIST test images")
    args = parser.parse_args()
    done = {r["checkpoint_sha256"] for r in read_records(TARGET)}
    for rec in latest_by_id(read_records(SOURCE)):
        if rec["checkpoint_sha256"] in done:
            continue
        options = dict(model=rec["model"], source=rec["source"], checkpoint=rec["checkpoint"], dataset="mnist",
                       threat_model="Linf", eps=0.3, metrics="clean,autoattack", aa_version="fast",
                       n_examples=args.n, batch_size=200, seed=rec["seed"], method=rec["method"],
                       training=rec["training"], job_id=rec.get("job_id"), records=TARGET)
        out = evaluate(make_eval_config(options)).record
        print(rec["method"], rec["seed"], {k: v["value"] for k, v in out["metrics"].items()}, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
