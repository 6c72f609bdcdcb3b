"""Benchmark: cost of the dataset-wide coupling in W-PGD, and of W-PGD-budget, against pointwise PGD.

Measured in one run, on the same model and the same MNIST test images:

1. W-PGD (p = 2, l_inf, T steps) over N images vs T-step pointwise PGD over the same N images in
   batches of the same size (target ratio <= 1.15);
2. W-PGD time with 4N images / with N images (target 3.6 .. 4.4: linear in the data set size),
   next to the same ratio for pointwise PGD as a control: PGD's cost is linear by construction, so
   a deviation it shares is the machine's (shared cores, caches), not W-PGD's;
3. W-PGD-budget (K steps) vs PGD maximising the same TRADES KL objective (K steps) on one batch,
   alone and inside a full TRADES training step (inner maximisation + outer CE + beta KL, backward,
   SGD step; target <= 1.10).

Each figure is the minimum over ``--repeats`` runs (the least disturbed one: on a shared machine
other jobs only ever add time), the measurements interleaved so that load drifts hit all of them
alike. Both wall-clock and process CPU time are reported. Prints a markdown table.

Allocator note: with glibc's default malloc, W-PGD's batch loop (one forward + backward per batch,
everything freed in between) lets malloc hand the activations' memory back to the OS after every
batch, so each batch page-faults it in again (about 6k minor faults per batch of 250 here, against
under 1k for PGD's step loop); that system time grows with N and shows up in the 4N / N ratio.
``--malloc no-trim`` applies the tuning the console script applies by default
(``wdro_finetune.utils.allocator.keep_freed_memory``: M_TRIM_THRESHOLD = 1 GiB, M_MMAP_THRESHOLD = 32 MiB),
which removes it (jemalloc / tcmalloc, which PyTorch's CPU tuning guide recommends, were not tried here).

    python benchmarks/bench_wpgd.py [--n 1000] [--steps 10] [--batch-size 250] [--repeats 5]
                                    [--threads 1] [--malloc default|no-trim]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from wdro_finetune.attacks import kl_divergence, pgd, pgd_maximize, w_pgd, w_pgd_budget
from wdro_finetune.utils.allocator import keep_freed_memory

MNIST_TEST = Path(os.environ.get("WDRO_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data")) / "mnist_test.npz"
DELTA = 0.1
BETA = 6.0
Timing = tuple[float, float]  # (wall seconds, CPU seconds)


def main() -> None:
    args = _parse_args()
    if args.malloc == "no-trim":
        if not keep_freed_memory():
            raise RuntimeError("the allocator tuning needs glibc")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = _model().eval()
    x, y = _mnist(4 * args.n)
    small, large = (x[:args.n], y[:args.n]), (x, y)
    xb, yb = x[:args.batch_size], y[:args.batch_size]
    steps, batch = args.steps, args.batch_size
    timers = {
        "w_small": lambda: w_pgd(model, *small, delta=DELTA, steps=steps, batch_size=batch),
        "p_small": lambda: _pgd_batches(model, *small, steps, batch),
        "w_large": lambda: w_pgd(model, *large, delta=DELTA, steps=steps, batch_size=batch),
        "p_large": lambda: _pgd_batches(model, *large, steps, batch),
        "budget": lambda: w_pgd_budget(model, xb, _kl_to(model, xb), delta=DELTA, steps=steps),
        "trades_inner": lambda: _trades_pgd(model, xb, _kl_to(model, xb), steps),
        "wdro_step": lambda: _trades_step(model, xb, yb, lambda obj: w_pgd_budget(model, xb, obj, delta=DELTA,
                                                                                  steps=steps)),
        "trades_step": lambda: _trades_step(model, xb, yb, lambda obj: _trades_pgd(model, xb, obj, steps)),
    }
    _report(args, _interleaved(timers, args.repeats))


def _pgd_batches(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, batch_size: int) -> None:
    for start in range(0, x.shape[0], batch_size):
        rows = slice(start, start + batch_size)
        pgd(model, x[rows], y[rows], eps=DELTA, steps=steps, step_size=1.875 * DELTA / steps, random_start=False)


def _kl_to(model: nn.Module, x: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    with torch.no_grad():
        clean = model(x)
    return lambda logits: kl_divergence(clean, logits)


def _trades_pgd(model: nn.Module, x: torch.Tensor, objective, steps: int) -> torch.Tensor:
    return pgd_maximize(model, x, objective, eps=DELTA, steps=steps, step_size=DELTA / 4, start="normal")


def _trades_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, inner) -> None:
    """One TRADES training step (SGD, no momentum) with the given inner maximiser; weights restored."""
    saved = [parameter.detach().clone() for parameter in model.parameters()]
    x_adv = inner(_kl_to(model, x))
    model.train()
    logits, logits_adv = model(x), model(x_adv)
    loss = F.cross_entropy(logits, y) + BETA * kl_divergence(logits, logits_adv).mean()
    model.zero_grad(set_to_none=True)
    loss.backward()
    with torch.no_grad():
        for parameter, value in zip(model.parameters(), saved):
            parameter.sub_(0.01 * parameter.grad)
            parameter.copy_(value)
    model.zero_grad(set_to_none=True)
    model.eval()


def _interleaved(timers: dict[str, Callable[[], object]], repeats: int) -> dict[str, Timing]:
    for run in timers.values():  # warm-up
        run()
    samples: dict[str, list[Timing]] = {name: [] for name in timers}
    for _ in range(repeats):
        for name, run in timers.items():
            wall, cpu = time.perf_counter(), time.process_time()
            run()
            samples[name].append((time.perf_counter() - wall, time.process_time() - cpu))
    return {name: (min(s[0] for s in sample), min(s[1] for s in sample)) for name, sample in samples.items()}


def _report(args: argparse.Namespace, t: dict[str, Timing]) -> None:
    n, steps, batch = args.n, args.steps, args.batch_size
    print(f"CPU, torch {torch.__version__}, {args.threads} thread(s), glibc malloc {args.malloc}; MNIST CNN "
          f"(~1M MAC/image); delta={DELTA} (W_2, l_inf); batch {batch}; minimum of {args.repeats} runs\n")
    print("| measurement | wall (s) | CPU (s) | ratio wall | ratio CPU | target |")
    print("| --- | --- | --- | --- | --- | --- |")
    rows = [
        (f"W-PGD T={steps} N={n} / PGD T={steps} N={n}", "w_small", "p_small", "<= 1.15"),
        (f"W-PGD T={steps} N={4 * n} / PGD T={steps} N={4 * n}", "w_large", "p_large", "<= 1.15"),
        (f"W-PGD N={4 * n} / W-PGD N={n} (T={steps})", "w_large", "w_small", "3.6 .. 4.4"),
        (f"control: PGD N={4 * n} / PGD N={n} (T={steps})", "p_large", "p_small", "4 if the machine is steady"),
        (f"W-PGD-budget K={steps} / TRADES PGD K={steps} (inner only)", "budget", "trades_inner", ""),
        (f"W-DRO TRADES step / TRADES step (K={steps})", "wdro_step", "trades_step", "<= 1.10"),
    ]
    for label, top, bottom, target in rows:
        (wall_a, cpu_a), (wall_b, cpu_b) = t[top], t[bottom]
        print(f"| {label} | {wall_a:.3f} / {wall_b:.3f} | {cpu_a:.3f} / {cpu_b:.3f} | "
              f"{wall_a / wall_b:.3f} | {cpu_a / cpu_b:.3f} | {target} |")


def _model() -> nn.Module:
    """x (N, 1, 28, 28) -> logits (N, 10); ~1M multiply-adds per image (random weights: timing only)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )


def _mnist(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(MNIST_TEST) as data:
        x = torch.from_numpy(data["x"][:n].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(data["y"][:n].astype(np.int64))
    return x, y


def _parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--malloc", choices=("default", "no-trim"), default="default")
    return parser.parse_args()


if __name__ == "__main__":
    main()
