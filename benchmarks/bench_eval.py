"""Overhead of our evaluation runner against a direct pyautoattack call, in one run.

Same model (the builtin SmallCNN, trained cleanly for one epoch on 3000 real MNIST training images,
fixed seed), same first-n MNIST test images, same seed and AutoAttack settings (``fast`` =
apgd-ce + apgd-t with pyautoattack's standard settings, i.e. ``version='custom'``):

- ours:   ``wdro_finetune.evaluate.runner.evaluate()`` with the ``autoattack`` metric only: reads the
          test split from the .npz (+ sha256), runs AutoAttack inside ``fork_rng`` in resumable chunks
          (one chunk: batch size = n), writes per-example flags, the record line and provenance.
- direct: ``pyautoattack.AutoAttack(model, norm=, eps=, version='custom', attacks=, device=, seed=)``
          then ``run_standard_evaluation(x, y, batch_size=n)`` on tensors already in memory.

The two are timed alternately (ours first in odd repeats, direct first in even ones) after one
untimed warm-up of each, and their per-example flags are checked to be identical every time.
Overhead = ours / direct - 1 in wall time and in CPU time (user + system of this process and its
children, e.g. the `git` call for provenance), per pair, as the median over pairs and over the sums.

    .venv/bin/python benchmarks/bench_eval.py [--n 64] [--eps 0.15] [--repeats 4] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch starts its OpenMP pool

import numpy as np  # noqa: E402
import pyautoattack  # noqa: E402
import torch  # noqa: E402

from wdro_finetune.config import Dataset, ThreatModel  # noqa: E402
from wdro_finetune.data.datasets import ENV_DATA_DIR, images_to_tensor, load_split  # noqa: E402
from wdro_finetune.evaluate.autoattack import AutoAttackMetric  # noqa: E402
from wdro_finetune.evaluate.runner import EvalConfig, evaluate  # noqa: E402
from wdro_finetune.models import LoadedModel  # noqa: E402
from wdro_finetune.models.builtin import SmallCNN  # noqa: E402
from wdro_finetune.results.records import load_per_example  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ATTACKS = ["apgd-ce", "apgd-t"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=64, help="first n MNIST test images (one chunk)")
    parser.add_argument("--eps", type=float, default=0.15, help="Linf budget (0.15 leaves points for apgd-t)")
    parser.add_argument("--repeats", type=int, default=4, help="timed pairs")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    os.environ.setdefault(ENV_DATA_DIR, str(REPO.parent / "shared" / "data"))
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = train_smallcnn(Path(os.environ[ENV_DATA_DIR]))
    train_s = time.perf_counter() - t0
    data = load_split(Dataset.MNIST, "test", args.n)
    x, y = data.x, data.y
    with torch.no_grad():
        clean = int((model(x).argmax(1) == y).sum())

    work = Path(tempfile.mkdtemp(prefix="bench_eval_"))
    runs = {"ours": lambda tag: run_ours(model, args, work / tag), "direct": lambda tag: run_direct(model, x, y, args)}
    runs["ours"]("warmup")
    runs["direct"]("warmup")

    rows = []
    for rep in range(args.repeats):
        order = ["ours", "direct"] if rep % 2 == 0 else ["direct", "ours"]
        wall, cpu, flags = {}, {}, {}
        for name in order:
            start, start_cpu = time.perf_counter(), cpu_seconds()
            flags[name] = runs[name](f"rep{rep}")
            wall[name], cpu[name] = time.perf_counter() - start, cpu_seconds() - start_cpu
        if not np.array_equal(flags["ours"], flags["direct"]):
            raise SystemExit(f"repeat {rep}: per-example flags differ between ours and direct pyautoattack")
        rows.append((rep + 1, " then ".join(order), wall["ours"], wall["direct"], cpu["ours"], cpu["direct"],
                     int(flags["ours"].sum())))

    fixed = []  # everything the runner does besides attacking: split, sha256, provenance, record, per-example file
    for i in range(5):
        start = time.perf_counter()
        run_ours(model, args, work / f"fixed{i}", metrics=("clean",))
        fixed.append(time.perf_counter() - start)
    fixed_s = statistics.median(fixed)
    direct_s = statistics.median(r[3] for r in rows)

    wall_ov = [100 * (r[2] / r[3] - 1) for r in rows]
    cpu_ov = [100 * (r[4] / r[5] - 1) for r in rows]
    wall_total = 100 * (sum(r[2] for r in rows) / sum(r[3] for r in rows) - 1)
    cpu_total = 100 * (sum(r[4] for r in rows) / sum(r[5] for r in rows) - 1)
    print(f"## bench_eval: our runner vs direct pyautoattack ({args.n} MNIST test images, Linf eps={args.eps}, "
          f"fast = apgd-ce + apgd-t, seed {args.seed})\n")
    print(f"SmallCNN trained in {train_s:.1f} s; clean {clean}/{args.n}; torch {torch.__version__}, "
          f"pyautoattack {version('pyautoattack')}, "
          f"{torch.get_num_threads()} thread(s), {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}\n")
    print("| repeat | order | ours wall (s) | direct wall (s) | wall overhead | ours CPU (s) | direct CPU (s) "
          "| CPU overhead | robust |")
    print("|---|---|---|---|---|---|---|---|---|")
    for (rep, order, ow, dw, oc, dc, robust), wo, co in zip(rows, wall_ov, cpu_ov):
        print(f"| {rep} | {order} | {ow:.2f} | {dw:.2f} | {wo:+.1f}% | {oc:.2f} | {dc:.2f} | {co:+.1f}% "
              f"| {robust}/{args.n} |")
    print(f"\noverhead (target <= 3%): CPU time median {statistics.median(cpu_ov):+.2f}%, summed {cpu_total:+.2f}%; "
          f"wall time median {statistics.median(wall_ov):+.2f}%, summed {wall_total:+.2f}%. "
          f"Per-example flags identical in every repeat. CPU time (user + system, this process and its children) "
          f"is the robust figure on a shared machine; wall time follows the load of other processes.\n")
    print(f"Fixed cost of the runner (evaluate() with the clean metric only: test split from .npz + sha256, "
          f"provenance, record line, per-example file; median of 5): {1000 * fixed_s:.0f} ms = "
          f"{100 * fixed_s / direct_s:.2f}% of the median direct AutoAttack time ({direct_s:.2f} s). The attack "
          f"itself is the same pyautoattack call with the same arguments.\n")
    print("command: " + " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv]))
    return 0


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def run_ours(model: torch.nn.Module, args, records: Path, metrics=("autoattack",)) -> np.ndarray:
    config = EvalConfig(model="mnist-smallcnn", dataset=Dataset.MNIST, threat_model=ThreatModel.LINF, eps=args.eps,
                        n_examples=args.n, metrics=metrics,
                        metric_options={"autoattack": AutoAttackMetric.options_from({"aa_version": "fast"})},
                        batch_size=args.n, seed=args.seed, records=str(records))
    result = evaluate(config, model=LoadedModel(model, "mnist-smallcnn", "builtin", None, None))
    return load_per_example(records, result.record["record_id"])[metrics[-1]]


def run_direct(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, args) -> np.ndarray:
    adversary = pyautoattack.AutoAttack(model, norm="Linf", eps=args.eps, version="custom", attacks=ATTACKS,
                                        device="cpu", seed=args.seed)
    adversary.apgd.n_restarts = 1  # pyautoattack's 'standard' settings for these two attacks
    adversary.apgd_targeted.n_restarts = 1
    adversary.apgd_targeted.n_target_classes = 9
    _, y_adv = adversary.run_standard_evaluation(x, y, batch_size=len(y))
    return (y_adv == y).numpy()


def train_smallcnn(data_dir: Path, n_train: int = 3000, seed: int = 0) -> torch.nn.Module:
    """The same recipe as the test suite's fixture (tests/conftest.py): Adam 1e-3, batch 50, one epoch."""
    with np.load(data_dir / "mnist_train.npz") as data:
        x = images_to_tensor(data["x"][:n_train])
        y = torch.as_tensor(data["y"][:n_train].astype(np.int64))
    torch.manual_seed(seed)
    model = SmallCNN()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    order = torch.randperm(n_train, generator=torch.Generator().manual_seed(seed))
    model.train()
    for start in range(0, n_train, 50):
        idx = order[start:start + 50]
        loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    return model.eval()


if __name__ == "__main__":
    sys.exit(main())
