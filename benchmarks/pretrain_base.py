"""Produce the bundled pretrained base models with the project's own engine.

    python benchmarks/pretrain_base.py mnist      # PGD-10 adversarial training, eps 0.3
    python benchmarks/pretrain_base.py cifar10    # PGD-5 adversarial training, eps 8/255 (about an hour on 2 cores)

Each run trains from random initialisation (``pretrained=False``), then copies the final weights to
``wdro_finetune/assets/weights/<model>.safetensors`` with ``<model>.json`` (the run's run.json, the
weights' sha256 and the command). The run folders stay under ``runs/pretrain/``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

from wdro_finetune.config.finetune import make_finetune_config
from wdro_finetune.train.loop import finetune
from wdro_finetune.utils.fileio import atomic_write_text, sha256_file

ASSETS = Path(__file__).resolve().parents[1] / "wdro_finetune" / "assets" / "weights"

RECIPES = {
    "mnist": dict(model="mnist-smallcnn", dataset="mnist", threat_model="Linf", eps=0.3, method="pgd-at",
                  inner_steps=10, optimizer="adamw", lr=1e-3, weight_decay=0.0, schedule="cosine", warmup=200,
                  batch_size=128, epochs=4, seed=0, holdout=1000),
    "cifar10": dict(model="cifar10-resnet-small", dataset="cifar10", threat_model="Linf", eps=8 / 255,
                    method="pgd-at", inner_steps=5, optimizer="sgd", lr=0.1, weight_decay=5e-4, schedule="cosine",
                    warmup=200, batch_size=128, epochs=6, seed=0, holdout=1000),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("recipe", choices=sorted(RECIPES))
    parser.add_argument("--epochs", type=int, default=None, help="override the recipe's epochs")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted pretraining run")
    args = parser.parse_args(argv)
    options = dict(RECIPES[args.recipe], pretrained=False, out=f"runs/pretrain/{args.recipe}",
                   checkpoint_every=200, resume=args.resume)
    if args.epochs:
        options["epochs"] = args.epochs
    result = finetune(make_finetune_config(options), progress=sys.stderr.isatty())
    name = options["model"]
    target = ASSETS / f"{name}.safetensors"
    ASSETS.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(result.model_path, target)
    run = json.loads((result.out / "run.json").read_text())
    record = {"model": name, "sha256": sha256_file(target), "command": "python benchmarks/pretrain_base.py "
              + " ".join(argv or sys.argv[1:]), "recipe": RECIPES[args.recipe], "run": run,
              "log": [json.loads(line) for line in (result.out / "log.jsonl").read_text().splitlines()]}
    atomic_write_text(ASSETS / f"{name}.json", json.dumps(record, indent=2, sort_keys=True) + "\n")
    print(f"{target} sha256={record['sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
