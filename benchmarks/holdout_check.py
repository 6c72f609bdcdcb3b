"""Score fine-tuned runs on their HELD-OUT TRAINING images (never the test set), for choosing
hyper-parameters before a test-set evaluation.

    python benchmarks/holdout_check.py RUN_DIR [RUN_DIR ...] [--pretrained] [--delta 0.1,0.2 | 1/255,2/255] [--n 1000]

Per run (a ``finetune --out`` folder with run.json and model.safetensors): clean accuracy, APGD-CE
accuracy at the run's eps (pointwise, one restart) and W-PGD W_2 accuracy (ReDLR, T = 50) at each
delta, on the last ``--n`` of the images the run held out (its ``holdout`` option). ``--pretrained``
adds the base model of the first run on the same images. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from wdro_finetune.attacks.wasserstein_eval import w_pgd
from wdro_finetune.config import Dataset, ThreatModel, parse_number_list
from wdro_finetune.evaluate.autoattack import autoattack_flags
from wdro_finetune.models.outputs import predict
from wdro_finetune.models import load_model
from wdro_finetune.data.training import load_train_data


def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
          deltas: list[float]) -> dict[str, float]:
    """clean, apgd-ce@eps and w2@delta accuracies in percent."""
    with torch.no_grad():
        row = {"clean": 100.0 * (predict(model, x, "cpu", 500) == y).double().mean().item()}
    flags = autoattack_flags(model, x, y, norm=norm, eps=eps, version="custom", attacks=("apgd-ce",),
                             seed=0, device="cpu", batch_size=500)
    row["apgd-ce"] = 100.0 * flags.mean()
    for delta in deltas:
        result = w_pgd(model, x, y, delta=delta, p=2, norm=norm, steps=50, loss="redlr", batch_size=500)
        row[f"w2@{delta:.4g}"] = 100.0 * result.accuracy
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--delta", default="0.1,0.2")
    parser.add_argument("--n", type=int, default=1000)
    args = parser.parse_args()
    deltas = list(parse_number_list(args.delta, "--delta"))
    first = json.loads((args.runs[0] / "run.json").read_text())["config"]
    dataset, threat = Dataset(first["dataset"]), ThreatModel(first["threat_model"])
    _, held = load_train_data(dataset, first["train_subset"], first["holdout"], first["data_dir"])
    x, y = held.x[-args.n:], held.y[-args.n:]
    entries = [("pretrained", None)] if args.pretrained else []
    entries += [(run.name, run / "model.safetensors") for run in args.runs]
    print(f"{len(x)} held-out training images of {dataset.value}, eps {first['eps']}")
    header = None
    for name, weights in entries:
        model = load_model(first["model"], dataset, threat, checkpoint=weights).module
        row = score(model, x, y, first["eps"], threat.value, deltas)
        if header is None:
            header = list(row)
            print("| run | " + " | ".join(header) + " |\n|---|" + "---|" * len(header))
        print(f"| {name} | " + " | ".join(f"{row[k]:.1f}" for k in header) + " |", flush=True)


if __name__ == "__main__":
    main()
