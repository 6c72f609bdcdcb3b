"""Choose the sensitivity eps of benchmarks/exp_triplet_table1_mnist.yaml on HELD-OUT TRAINING images only.

    OMP_NUM_THREADS=1 python benchmarks/calibrate_sensitivity_eps.py [--seeds 0,1,2] [--eps 0.01,0.02,...] \
        [--save-models benchmarks/models]

(about 12 minutes per seed on one busy CPU core)

Ovalle et al.'s clean model keeps about 99% accuracy under FGSM at their sensitivity budget, so the budget is
small. Per seed: the ``mnist-smallcnn`` architecture from random weights, trained CLEANLY with the sweep's
optimisation (600 steps of batch 128 on the first 20000 training images in the engine's batch order, AdamW lr
1e-3, cosine, 100 warm-up steps, no weight decay); then clean and FGSM accuracy (no random start, step eps: the
``fgsm`` metric's attack) on training images 50000..59999, which neither this script nor the sweep trains on
(the sweep trains on 0..19999 and holds out 20000..20999). Prints one Markdown row per eps: the mean over seeds
and the per-seed values. The test split is never read.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from wdro_finetune.attacks.pointwise import FGSM
from wdro_finetune.config import Dataset, ThreatModel, parse_number_list
from wdro_finetune.config.finetune import make_finetune_config
from wdro_finetune.data.datasets import load_split
from wdro_finetune.data.training import TrainStream, load_train_data
from wdro_finetune.models import load_model
from wdro_finetune.models.checkpoint import save_safetensors
from wdro_finetune.models.outputs import predict
from wdro_finetune.train.schedule import build_optimizer, build_scheduler
from wdro_finetune.utils.fileio import sha256_file

OPTIMISATION = dict(optimizer="adamw", lr=0.001, weight_decay=0, schedule="cosine", warmup=100, batch_size=128,
                    steps=600, train_subset=20000)
HELD_OUT = (50000, 60000)  # training images no run of the experiment trains on
BATCH = 1000


def clean_model(seed: int) -> torch.nn.Module:
    """The architecture from random weights (as the engine makes it), trained on clean images only."""
    cfg = make_finetune_config(dict(OPTIMISATION, model="mnist-smallcnn", dataset="mnist", pretrained=False,
                                    seed=seed, holdout=0, out="unused"))
    torch.manual_seed(seed)
    model = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF, pretrained=False, init_seed=seed).module
    train, _ = load_train_data(Dataset.MNIST, cfg.train_subset, 0, None)
    stream = TrainStream(train.x, train.y, cfg.batch_size, seed, False)
    optimiser = build_optimizer(cfg, model, [])
    scheduler = build_scheduler(cfg, optimiser, cfg.steps)
    model.train()
    for step in range(cfg.steps):
        x, y = stream.batch(step)
        loss = F.cross_entropy(model(x), y)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        scheduler.step()
    return model.eval()


def accuracies(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, grid: list[float]) -> dict[float, float]:
    """{eps: FGSM accuracy in %} (eps 0: clean accuracy) on (x, y)."""
    out = {0.0: 100 * (predict(model, x, "cpu", BATCH) == y).float().mean().item()}
    for eps in grid:
        attack = FGSM(eps=eps)
        adv = torch.cat([attack(model, x[i:i + BATCH], y[i:i + BATCH]) for i in range(0, len(y), BATCH)])
        out[eps] = 100 * (predict(model, adv, "cpu", BATCH) == y).float().mean().item()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--eps", default="0.01,0.02,0.03,0.05,0.075,0.1,0.2,0.3")
    parser.add_argument("--save-models", metavar="DIR", help="also write each seed's clean model to "
                        "DIR/mnist-smallcnn-clean-seed{SEED}.safetensors (the --precomputed-source of the sweep)")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    grid = parse_number_list(args.eps, "--eps")
    full = load_split(Dataset.MNIST, "train", None)
    x, y = full.x[HELD_OUT[0]:HELD_OUT[1]], full.y[HELD_OUT[0]:HELD_OUT[1]]
    per_seed = {}
    for seed in seeds:
        t = time.perf_counter()
        model = clean_model(seed)
        per_seed[seed] = accuracies(model, x, y, grid)
        if args.save_models:
            path = Path(args.save_models) / f"mnist-smallcnn-clean-seed{seed}.safetensors"
            save_safetensors(model, path, {"made_by": "benchmarks/calibrate_sensitivity_eps.py", "seed": str(seed),
                                           **{k: str(v) for k, v in OPTIMISATION.items()}})
            print(f"wrote {path} (sha256 {sha256_file(path)})", flush=True)
        print(f"seed {seed} ({time.perf_counter() - t:.0f} s): " + ", ".join(
            f"eps {eps:g}: {acc:.2f}" for eps, acc in per_seed[seed].items()), flush=True)
    print(f"\n| eps | FGSM acc. mean (n = {len(y)} held-out training images) | per seed ({', '.join(map(str, seeds))}) |")
    print("|---|---|---|")
    for eps in [0.0, *grid]:
        values = [per_seed[s][eps] for s in seeds]
        name = "0 (clean)" if eps == 0 else f"{eps:g}"
        print(f"| {name} | {sum(values) / len(values):.2f} | {' / '.join(f'{v:.2f}' for v in values)} |")


if __name__ == "__main__":
    main()
