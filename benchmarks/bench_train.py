"""Training-step ratios, measured in one run on one model and batch (issue [2/7] targets):

- W-DRO TRADES step / TRADES step                      (target <= 1.10)
- W-DRO TRADES step with --w2-inner knapsack / TRADES   (target <= 1.10; issue [3/5])
- TRADES step / ((K + 2) x one forward+backward)       (target <= 1.10; the pass-count floor)
- peak memory of W-DRO TRADES / TRADES                 (target <= 1.20; CUDA: max_memory_allocated;
                                                        CPU: peak of the torch profiler's allocation trace)
Times are CPU time of this process on CPU (robust to other jobs on a shared machine; run with
OMP_NUM_THREADS=1), synchronised wall time on CUDA.

    python benchmarks/bench_train.py --model cifar10-resnet-small --batch-size 128 --inner-steps 10
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.methods.factory import build_objective
from wdro_finetune.models import load_model
from wdro_finetune.models.builtin import BUILTIN_MODELS
from wdro_finetune.config.finetune import make_finetune_config


def _setup(model_name: str, batch: int, device: str):
    dataset = BUILTIN_MODELS[model_name].dataset
    model = load_model(model_name, dataset, ThreatModel.LINF, pretrained=False).module.to(device).train()
    shape = (1, 28, 28) if dataset == Dataset.MNIST else (3, 32, 32)
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((batch, *shape), generator=gen).to(device)
    y = torch.randint(0, 10, (batch,), generator=gen).to(device)
    return model, dataset, x, y


def _objective(dataset: Dataset, threat: str, steps: int, positives: torch.Tensor | None = None, **extra):
    cfg = make_finetune_config(dict(model="m", dataset=dataset.value, method="trades", threat=threat,
                                    inner_steps=steps, **extra))
    return build_objective(cfg, positives)


def _clock(device: str):
    """CPU: this process's CPU time (robust to other jobs on a shared box); CUDA: synchronised wall time."""
    if device.startswith("cuda"):
        def now() -> float:
            torch.cuda.synchronize()
            return time.perf_counter()
        return now
    return time.process_time


def _time(fn, repeats: int, clock=time.process_time) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = clock()
        fn()
        times.append(clock() - t)
    return statistics.median(times)


def measure_times(model_name: str, batch: int, steps: int, repeats: int, device: str) -> dict[str, float]:
    model, dataset, x, y = _setup(model_name, batch, device)
    params = list(model.parameters())

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(x), y).backward()

    index = torch.arange(batch)

    def step(objective):
        def run():
            model.zero_grad(set_to_none=True)
            objective(model, x, y, torch.Generator(device=device).manual_seed(0), index).loss.backward()
        return run

    objectives = {"trades": _objective(dataset, "pointwise", steps), "wdro": _objective(dataset, "w2", steps),
                  "wdro-knapsack": _objective(dataset, "w2", steps, w2_inner="knapsack"),
                  "armor-kl": _objective(dataset, "pointwise", steps, reweight="armor-kl"),
                  "armor-alpha": _objective(dataset, "pointwise", steps, reweight="armor-alpha"),
                  "triplet-sa": _objective(dataset, "pointwise", steps, triplet="sa")}
    if dataset == Dataset.MNIST:  # L_ia: invariance positives (random stand-ins: the cost does not depend on them)
        objectives["triplet-sa+ia"] = _objective(dataset, "pointwise", steps, torch.rand_like(x).cpu(),
                                                 triplet="sa+ia")
    out = {"fwd_bwd": [], **{k: [] for k in objectives}}
    clock = _clock(device)
    for _ in range(3):  # interleave to share any drift of the machine
        out["fwd_bwd"].append(_time(fwd_bwd, repeats, clock))
        for name, objective in objectives.items():
            out[name].append(_time(step(objective), max(1, repeats // 3), clock))
    del params
    return {k: statistics.median(v) for k, v in out.items()}


def component_costs(batch: int, feature_dim: int, repeats: int = 200) -> dict[str, float]:
    """CPU seconds of the added parts alone (forward + backward on per-sample losses (batch,) and features
    (batch, feature_dim)): what re-weighting and the triplet term add to a step, free of step-time noise."""
    from wdro_finetune.methods.regularizers import TripletTerm
    from wdro_finetune.methods.parts import make_aggregator

    gen = torch.Generator().manual_seed(0)
    losses = torch.rand(batch, generator=gen, requires_grad=True)
    h = torch.randn(batch, feature_dim, generator=gen, requires_grad=True)
    h_adv = torch.randn(batch, feature_dim, generator=gen, requires_grad=True)
    y = torch.arange(batch) % 10
    parts = {"armor-kl": make_aggregator("armor-kl", eps=0.02, kappa=0.1),
             "armor-alpha": make_aggregator("armor-alpha", eps=0.5, alpha=6.0)}
    out = {}
    for name, agg in parts.items():
        out[name] = _time(lambda: agg(losses).backward(), repeats)
    term = TripletTerm(0.5, 1e-4, 0.05)
    out["triplet-sa"] = _time(lambda: term(None, None, y, None, [h, h_adv])[0].backward(), repeats)
    return out


def peak_memory(model_name: str, batch: int, steps: int, threat: str, device: str, **extra) -> float:
    """Peak bytes allocated by torch during one training step (the step's own allocations).

    CUDA: ``max_memory_allocated``. CPU: the running sum of the allocation events the torch profiler
    records (``profile_memory=True``), whose maximum is the step's peak.
    """
    model, dataset, x, y = _setup(model_name, batch, device)
    objective = _objective(dataset, threat, steps, **extra)

    def run():
        model.zero_grad(set_to_none=True)
        objective(model, x, y, torch.Generator(device=device).manual_seed(0)).loss.backward()

    run()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        run()
        return torch.cuda.max_memory_allocated() - base
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    # allocations are attributed to the op that made them (self usage), frees are "[memory]" events
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage), key=lambda e: e.time_range.start)
    level = peak = 0
    for event in events:
        level += event.self_cpu_memory_usage
        peak = max(peak, level)
    return float(peak)


def measure_memory(model_name: str, batch: int, steps: int, device: str) -> dict[str, float]:
    out = {threat: peak_memory(model_name, batch, steps, threat, device) for threat in ("pointwise", "w2")}
    out["w2-knapsack"] = peak_memory(model_name, batch, steps, "w2", device, w2_inner="knapsack")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="cifar10-resnet-small", choices=sorted(BUILTIN_MODELS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--inner-steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    t = measure_times(args.model, args.batch_size, args.inner_steps, args.repeats, args.device)
    mem = measure_memory(args.model, args.batch_size, args.inner_steps, args.device)
    k = args.inner_steps
    parts = component_costs(args.batch_size, 200 if args.model == "mnist-smallcnn" else 128)
    rows = [
        ("W-DRO TRADES step / TRADES step", t["wdro"] / t["trades"], "<= 1.10"),
        ("W-DRO TRADES (knapsack) step / TRADES step", t["wdro-knapsack"] / t["trades"], "<= 1.10"),
        (f"TRADES step / ({k}+2) fwd+bwd", t["trades"] / ((k + 2) * t["fwd_bwd"]), "<= 1.10"),
        ("peak memory W-DRO TRADES / TRADES", mem["w2"] / max(1, mem["pointwise"]), "<= 1.20"),
        ("peak memory W-DRO TRADES (knapsack) / TRADES", mem["w2-knapsack"] / max(1, mem["pointwise"]), "<= 1.20"),
        ("TRADES+armor-kl step / TRADES step", t["armor-kl"] / t["trades"], "<= 1.05"),
        ("TRADES+armor-alpha step / TRADES step", t["armor-alpha"] / t["trades"], "<= 1.05"),
        ("TRADES+triplet-sa step / TRADES step", t["triplet-sa"] / t["trades"], "<= 1.10"),
        ("(TRADES step + armor-kl alone) / TRADES step", 1 + parts["armor-kl"] / t["trades"], "<= 1.05"),
        ("(TRADES step + armor-alpha alone) / TRADES step", 1 + parts["armor-alpha"] / t["trades"], "<= 1.05"),
        ("(TRADES step + triplet-sa alone) / TRADES step", 1 + parts["triplet-sa"] / t["trades"], "<= 1.10"),
    ]
    if "triplet-sa+ia" in t:
        rows += [("TRADES+triplet-sa+ia step / TRADES step", t["triplet-sa+ia"] / t["trades"], "<= 1.10"),
                 (f"pass-count floor of L_ia: ({k}+3)/({k}+2)", (k + 3) / (k + 2), "")]
    print(f"model {args.model}, batch {args.batch_size}, K={k}, device {args.device}, "
          f"torch threads {torch.get_num_threads()}")
    print(f"fwd+bwd {t['fwd_bwd'] * 1e3:.1f} ms, TRADES step {t['trades'] * 1e3:.1f} ms, "
          f"W-DRO TRADES step {t['wdro'] * 1e3:.1f} ms (knapsack {t['wdro-knapsack'] * 1e3:.1f} ms); memory increase "
          f"TRADES {mem['pointwise'] / 2**20:.1f} MiB, W-DRO {mem['w2'] / 2**20:.1f} MiB "
          f"(knapsack {mem['w2-knapsack'] / 2**20:.1f} MiB)")
    print("| ratio | measured | target |\n|---|---|---|")
    for name, value, target in rows:
        print(f"| {name} | {value:.3f} | {target} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
