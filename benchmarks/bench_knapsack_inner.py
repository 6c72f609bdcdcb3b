"""Benchmark: the W_2 training adversaries W-PGD-knapsack and W-PGD-budget on the same training images (issue [3/5]).

On the first ``--n`` (128) TRAINING images of a bundled model (the pretrained weights), at each budget delta, with
and without the per-image cap (eps), both maximise the TRADES objective KL(f(x) || f(x')) with K = 10 steps, and
this prints, measured in one run:

- the W_2 KL objective mean_i KL_i of each and the ratio knapsack / budget (target >= 1), and the share of the
  sum carried by the 10% of images with the largest KL (how concentrated it is);
- flips: correctly classified images that the attack misclassifies (the W_2 accuracy loss; target knapsack >=
  budget), and images whose prediction changed at all;
- the achieved W_2 distance and the CPU time of each attack;
- the knapsack from first-order estimates only (``probe=False``), as an ablation;
- the reference: the exact knapsack on VERIFIED minimal distances (the ``distances`` ensemble: FMN, FAB-T,
  refinement) at the same delta, i.e. the evaluation's worst case, and how the distance estimates compare with
  those distances (median and quartiles of estimate / verified over the correctly classified images).

    OMP_NUM_THREADS=1 python benchmarks/bench_knapsack_inner.py --model mnist-smallcnn [--n 128] [--offset 0]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.attacks.knapsack_inner import w_pgd_knapsack_details
from wdro_finetune.attacks.losses import kl_divergence
from wdro_finetune.attacks.minimal_norm import DistanceSettings, minimal_distances
from wdro_finetune.attacks.wasserstein_eval import dataset_distance
from wdro_finetune.attacks.wasserstein_budget import w_pgd_budget
from wdro_finetune.data.datasets import load_split
from wdro_finetune.models import load_model
from wdro_finetune.models.builtin import BUILTIN_MODELS
from wdro_finetune.config import ThreatModel

SETTINGS = {"mnist-smallcnn": (0.3, (0.1, 0.2)), "cifar10-resnet-small": (8 / 255, (2 / 255, 4 / 255))}


def main() -> None:
    args = _parse_args()
    torch.set_num_threads(1)
    eps, deltas = SETTINGS[args.model]
    dataset = BUILTIN_MODELS[args.model].dataset
    model = load_model(args.model, dataset, ThreatModel.LINF).module.eval()
    data = load_split(dataset, "train", args.offset + args.n)
    x, y = data.x[args.offset:], data.y[args.offset:]
    with torch.no_grad():
        clean = model(x)
    correct = clean.argmax(1) == y
    t0 = time.process_time()
    verified = minimal_distances(model, x, y, DistanceSettings(norm="Linf")).distance
    print(f"model {args.model}, {args.n} training images from {args.offset}, clean accuracy "
          f"{100 * correct.float().mean():.1f}%, eps {eps:.4g}, K = {args.steps}, torch threads "
          f"{torch.get_num_threads()}; verified minimal distances in {time.process_time() - t0:.0f} CPU s")
    print("| delta | cap | attack | KL objective | KL share of the top 10% | flips (correct -> wrong) | prediction "
          "changes | W_2 distance | CPU s |\n|---|---|---|---|---|---|---|---|---|")
    estimates = {}
    for delta in deltas:
        exact = int(knapsack_accuracy(verified.numpy(), [delta]).flips_int[0])
        for cap in (None, eps):
            rows, found = _compare(model, x, y, clean, delta, cap, args.steps)
            estimates["first-order dhat"] = found["first-order dhat"]
            estimates[f"secant dtil (probe), delta {delta:.4g}, cap {cap if cap is None else f'{cap:.4g}'}"] = \
                found["secant dtil (probe)"]
            for name, row in rows.items():
                print(f"| {delta:.4g} | {cap if cap is None else f'{cap:.4g}'} | {name} | {row['kl']:.4f} | "
                      f"{100 * row['top']:.0f}% | {row['flips']} | {row['changes']} | {row['dist']:.4g} | "
                      f"{row['time']:.1f} |")
            k, b = rows["W-PGD-knapsack"], rows["W-PGD-budget"]
            print(f"| {delta:.4g} | {cap if cap is None else f'{cap:.4g}'} | **knapsack / budget** | "
                  f"**{k['kl'] / max(b['kl'], 1e-12):.2f}** | | **{k['flips']} vs {b['flips']}** | | | |")
        print(f"| {delta:.4g} | | exact knapsack on verified distances (no cap) | | | {exact} | | {delta:.4g} | |")
    _report_estimates(verified, correct, estimates)


def _compare(model, x, y, clean, delta, cap, steps) -> tuple[dict, dict]:
    objective = lambda logits: kl_divergence(clean, logits)  # noqa: E731
    rows, estimates = {}, {}
    for name, run in (
            ("W-PGD-budget", lambda: (w_pgd_budget(model, x, objective, delta=delta, steps=steps, budget_cap=cap,
                                                   generator=torch.Generator().manual_seed(0)), None)),
            ("W-PGD-knapsack", lambda: _knapsack(model, x, objective, delta, cap, steps, y, True)),
            ("W-PGD-knapsack, first-order only", lambda: _knapsack(model, x, objective, delta, cap, steps, y, False))):
        t0 = time.process_time()
        x_adv, details = run()
        seconds = time.process_time() - t0
        with torch.no_grad():
            logits = model(x_adv)
        kl = objective(logits)
        top = kl.sort(descending=True).values[:max(1, len(kl) // 10)].sum() / kl.sum().clamp_min(1e-30)
        rows[name] = {"kl": kl.mean().item(), "top": top.item(), "time": seconds,
                      "flips": int(((clean.argmax(1) == y) & (logits.argmax(1) != y)).sum()),
                      "changes": int((logits.argmax(1) != clean.argmax(1)).sum()),
                      "dist": dataset_distance(x_adv, x, norm="Linf")}
        if details is not None and name == "W-PGD-knapsack":
            estimates = {"first-order dhat": details.first_order, "secant dtil (probe)": details.estimate}
    return rows, estimates


def _knapsack(model, x, objective, delta, cap, steps, y, probe):
    out = w_pgd_knapsack_details(model, x, objective, delta=delta, steps=steps, budget_cap=cap, labels=y, probe=probe)
    return out.x_adv, out


def _report_estimates(verified: torch.Tensor, correct: torch.Tensor, estimates: dict) -> None:
    d = verified.numpy()
    keep = correct.numpy() & np.isfinite(d) & (d > 0)
    print(f"\nverified minimal distance (correct images): median {np.median(d[keep]):.4g}, quartiles "
          f"{np.quantile(d[keep], 0.25):.4g} / {np.quantile(d[keep], 0.75):.4g}")
    print("| estimate | median estimate / verified | quartiles | within [0.8, 1.25] |\n|---|---|---|---|")
    for name, values in estimates.items():
        ratio = values.numpy()[keep] / d[keep]
        ratio = np.where(np.isfinite(ratio), ratio, math.inf)
        q1, q2, q3 = np.quantile(ratio, [0.25, 0.5, 0.75])
        print(f"| {name} | {q2:.3f} | {q1:.3f} / {q3:.3f} | {100 * np.mean((ratio >= 0.8) & (ratio <= 1.25)):.0f}% |")


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mnist-smallcnn", choices=sorted(SETTINGS))
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--offset", type=int, default=0, help="first training image (the screen used 128)")
    parser.add_argument("--steps", type=int, default=10)
    return parser.parse_args()


if __name__ == "__main__":
    main()
