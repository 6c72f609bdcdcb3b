"""Benchmark: the minimal-distance ensemble against the W-PGD evaluation and against a PGD bisection.

Measured in one run, on the same model (default: the bundled ``mnist-smallcnn``) and the same test images,
one CPU thread each, in this order:

1. the ``wdro`` metric (W-PGD, T = 50, ReDLR, three budgets, with its bound passes) — the cost target;
2. the ``distances`` metric (FMN + FAB-T + refinement, then the knapsack and the pointwise curve);
3. the reference: per-example bisection on the radius, ``--bisect-steps`` (12) halvings of [0, 1], each
   probe a ``--pgd-steps`` (30) step margin-loss PGD with a uniform random start (2.5 * r / steps per step).

Targets (issue [1/5]): time(2) <= time(1); the ensemble's distance <= the bisection's on >= 95% of the
correctly classified points. Also printed: the time ratio (3)/(2), medians, the knapsack W_2 accuracy from
both sets of distances, and the knapsack's own cost on N = 10^6 synthetic distances x 1000 budgets.

    python benchmarks/bench_distances.py [--model mnist-smallcnn] [--n 1000] [--batch-size 500]
"""

from __future__ import annotations

import argparse
import math
import time

import numpy as np
import torch

from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.attacks.minimal_norm import _margin, verified_distance
from wdro_finetune.attacks.pointwise import per_sample_view, project_to_ball
from wdro_finetune.config import parse_dataset, parse_threat_model
from wdro_finetune.data.datasets import load_split
from wdro_finetune.evaluate.distances import DistancesMetric
from wdro_finetune.evaluate.metric import EvalContext
from wdro_finetune.evaluate.wdro import WdroMetric
from wdro_finetune.models import load_model
from wdro_finetune.results.formatting import budget_value
from wdro_finetune.utils.allocator import keep_freed_memory

DELTAS = {"mnist": "0.05,0.1,0.2", "cifar10": "1/510,2/510,4/510"}


def main() -> None:
    args = _parse_args()
    keep_freed_memory()
    torch.set_num_threads(1)
    dataset, threat = parse_dataset(args.dataset), parse_threat_model("Linf")
    model = load_model(args.model, dataset, threat).module.eval()
    data = load_split(dataset, "test", args.n)
    eps = 0.3 if args.dataset == "mnist" else 8 / 255
    ctx = EvalContext(model=model, data=data, dataset=dataset, threat_model=threat, eps=eps, device="cpu",
                      batch_size=args.batch_size, seed=0, state_dir=None)
    options = {"threat_model": "Linf", "delta": DELTAS[args.dataset]}
    t_wpgd, wpgd = _timed(lambda: WdroMetric(**WdroMetric.options_from(options)).compute(ctx))
    t_dist, dist = _timed(lambda: DistancesMetric(**DistancesMetric.options_from(options)).compute(ctx))
    torch.manual_seed(0)
    t_bis, bisect = _timed(lambda: _bisection_distances(model, data.x, data.y, args))
    ours = dist.per_example["dist"]
    correct = ours > 0
    tighter = float(np.mean(ours[correct] <= bisect[correct]))
    _report(args, t_wpgd, t_dist, t_bis, wpgd, dist, ours, bisect, correct, tighter)


def _bisection_distances(model, x, y, args) -> np.ndarray:
    """Reference distances (N,): the smallest radius of the bisection at which PGD found a verified adversarial."""
    out = []
    for start in range(0, len(y), args.batch_size):
        xb, yb = x[start:start + args.batch_size], y[start:start + args.batch_size]
        with torch.no_grad():
            wrong = model(xb).argmax(1) != yb
        lo, hi = torch.zeros(len(yb)), torch.ones(len(yb))
        best = torch.where(wrong, 0.0, math.inf).double()
        for _ in range(args.bisect_steps):
            mid = (lo + hi) / 2
            d = _pgd_probe(model, xb, yb, mid, args.pgd_steps)
            found = torch.isfinite(d)
            best = torch.where(found & ~wrong, torch.minimum(best, d), best)
            hi, lo = torch.where(found, mid, hi), torch.where(found, lo, mid)
        out.append(best.numpy())
    return np.concatenate(out)


def _pgd_probe(model, x0, y, radius, steps) -> torch.Tensor:
    """Smallest l_inf distance of a misclassified iterate of margin PGD in per-sample balls; inf if none."""
    x = project_to_ball(x0 + (torch.rand_like(x0) * 2 - 1) * per_sample_view(radius, x0), x0, radius, "Linf").clamp(0, 1)
    step = per_sample_view(2.5 * radius / steps, x0)
    best = torch.full((len(y),), math.inf, dtype=torch.float64)
    for _ in range(steps):
        x.requires_grad_(True)
        m = _margin(model(x), y)
        (g,) = torch.autograd.grad(m.sum(), x)
        d = (x.detach() - x0).flatten(1).abs().amax(1).double()  # misclassified in this very forward: verified
        best = torch.where(m.detach() < 0, torch.minimum(best, d), best)
        x = project_to_ball(x.detach() - step * g.sign(), x0, radius, "Linf").clamp(0, 1)
    return torch.minimum(best, verified_distance(model, x0, y, x, "Linf"))


def _report(args, t_wpgd, t_dist, t_bis, wpgd, dist, ours, bisect, correct, tighter) -> None:
    rows = [("W-PGD evaluation, 3 budgets, T = 50 (wdro metric)", f"{t_wpgd:.1f} s"),
            ("distance ensemble + knapsack (distances metric)", f"{t_dist:.1f} s"),
            (f"bisection {args.bisect_steps} x PGD-{args.pgd_steps}", f"{t_bis:.1f} s"),
            ("time ensemble / W-PGD  [target <= 1]", f"{t_dist / t_wpgd:.3f}"),
            ("time bisection / ensemble", f"{t_bis / t_dist:.2f}"),
            ("share of correct points with ensemble distance <= bisection's  [target >= 0.95]", f"{tighter:.3f}"),
            ("median distance over correct points: ensemble / bisection",
             f"{np.median(ours[correct]):.4f} / {np.median(bisect[correct]):.4f}")]
    for label in [k.split("@")[1] for k in wpgd.values if k.startswith("w2_acc@")]:
        delta = budget_value(label)  # a fraction label such as 1/20
        from_bisect = knapsack_accuracy(bisect, [delta]).accuracy[0]
        rows.append((f"W_2 accuracy at delta {label}: W-PGD / knapsack(ensemble) / knapsack(bisection)",
                     f"{wpgd.values[f'w2_acc@{label}'].value:.1f} / {dist.values[f'w2k_acc@{label}'].value:.1f}"
                     f" / {from_bisect:.1f}"))
    synthetic = np.random.default_rng(0).exponential(0.3, 1_000_000)
    t_knap, _ = _timed(lambda: knapsack_accuracy(synthetic, np.linspace(0, 0.5, 1000)))
    rows.append(("knapsack, N = 10^6 distances x 1000 budgets", f"{t_knap:.2f} s"))
    print(f"\n{args.model}, n = {args.n}, batch {args.batch_size}, 1 thread\n")
    print("| measurement | value |\n|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")


def _timed(fn):
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mnist-smallcnn")
    parser.add_argument("--dataset", default="mnist", choices=sorted(DELTAS))
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--bisect-steps", type=int, default=12)
    parser.add_argument("--pgd-steps", type=int, default=30)
    return parser.parse_args()


if __name__ == "__main__":
    main()
