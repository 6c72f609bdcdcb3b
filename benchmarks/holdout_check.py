"""Score fine-tuned runs on their HELD-OUT TRAINING images (never the test set), for choosing
hyper-parameters before a test-set evaluation.

    python benchmarks/holdout_check.py RUN_DIR [RUN_DIR ...] [--pretrained] [--delta 0.05,0.1,0.2 | 1/510,2/510]
        [--n 1000] [--reference NAME] [--cache benchmarks/records_holdout] [--cached NAME-KEY ...]

Per run (a ``finetune --out`` folder with run.json and model.safetensors), on the last ``--n`` of the images the
run held out (its ``holdout`` option): clean accuracy, APGD-CE accuracy at the run's eps (pointwise, one
restart), and at each W_2 budget delta the best-known W_2 accuracy, min(W-PGD ReDLR T = 50, knapsack over the
minimal distances of the distance ensemble) -- the strong evaluation of issue [1/5]. Each entry's per-example
scores are cached in ``--cache``/per_example (the records' per-example store) under the sha256 of its weights and the settings, so a table is re-printed
without re-attacking. ``--pretrained`` adds the base model of the first run. The last columns are paired
differences to ``--reference`` (default: the first entry) with 95% bootstrap intervals over the images.
``--cached NAME-KEY`` adds an entry straight from the cache (the file name without ``.npz``), for runs whose
folders are gone. Checked: exactly the columns of these ``--delta`` values, for the same number of images. Not
checkable (the key hashes the weights, which are gone): that it was scored on the same images, i.e. the last
``--n`` held-out ones of the first RUN_DIR's dataset, holdout and eps; naming an entry of that configuration is
the caller's part.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.attacks.minimal_norm import DistanceSettings, minimal_distances
from wdro_finetune.attacks.wasserstein_eval import w_pgd
from wdro_finetune.config import Dataset, ThreatModel, parse_number_list
from wdro_finetune.data.training import load_train_data
from wdro_finetune.evaluate.autoattack import autoattack_flags
from wdro_finetune.models import load_model
from wdro_finetune.models.outputs import predict
from wdro_finetune.results.records import load_per_example, save_per_example
from wdro_finetune.utils.fileio import sha256_file

BATCH = 500


def score(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, norm: str,
          deltas: list[float]) -> dict[str, np.ndarray]:
    """Per-example arrays (N,): clean and apgd-ce correctness, W-PGD correctness per delta, minimal distance."""
    with torch.no_grad():
        out = {"clean": (predict(model, x, "cpu", BATCH) == y).numpy()}
    out["apgd-ce"] = autoattack_flags(model, x, y, norm=norm, eps=eps, version="custom", attacks=("apgd-ce",),
                                      seed=0, device="cpu", batch_size=BATCH)
    for delta in deltas:
        result = w_pgd(model, x, y, delta=delta, p=2, norm=norm, steps=50, loss="redlr", batch_size=BATCH)
        out[f"w2@{delta:.6g}"] = result.correct.cpu().numpy()
    settings = DistanceSettings(norm=norm)
    out["dist"] = np.concatenate([minimal_distances(model, x[i:i + BATCH], y[i:i + BATCH], settings)
                                  .distance.cpu().numpy() for i in range(0, len(x), BATCH)])
    return out


def best_w2(arrays: dict[str, np.ndarray], delta: float, rows=slice(None)) -> float:
    """Best-known W_2 accuracy in percent of the examples ``rows``: min(W-PGD, knapsack)."""
    wpgd = 100.0 * arrays[f"w2@{delta:.6g}"][rows].mean()
    return min(wpgd, float(knapsack_accuracy(arrays["dist"][rows], [delta]).accuracy[0]))


def columns(arrays: dict[str, np.ndarray], deltas: list[float], rows=slice(None)) -> dict[str, float]:
    """The table's numbers (percent) for the examples ``rows``."""
    out = {"clean": 100.0 * arrays["clean"][rows].mean(), "apgd-ce": 100.0 * arrays["apgd-ce"][rows].mean()}
    out.update({f"best W_2 @ {d:.4g}": best_w2(arrays, d, rows) for d in deltas})
    return out


def paired(arrays: dict, ref: dict, deltas: list[float], idx: np.ndarray) -> dict[str, str]:
    """Difference to ``ref`` of each column, with a 95% paired bootstrap interval over resampled images."""
    def diff(rows) -> dict[str, float]:
        mine, theirs = columns(arrays, deltas, rows), columns(ref, deltas, rows)
        return {k: v - theirs[k] for k, v in mine.items()}

    point, draws = diff(slice(None)), [diff(i) for i in idx]
    out = {}
    for k, v in point.items():
        lo, hi = np.percentile([d[k] for d in draws], [2.5, 97.5])
        out[k] = f"{v:+.1f} [{lo:+.1f}, {hi:+.1f}]"
    return out


def cached_score(name: str, weights: Path | None, cfg: dict, x, y, deltas: list[float], cache: Path) -> dict:
    """``score`` of one entry, read from / written to ``cache`` (keyed by weights sha256 and settings)."""
    sha = sha256_file(weights) if weights else f"pretrained:{cfg['model']}"
    key = hashlib.sha256(json.dumps([sha, cfg["dataset"], cfg["holdout"], len(x), cfg["eps"], deltas,
                                     cfg["threat_model"]]).encode()).hexdigest()[:16]
    cached = load_per_example(cache, f"{name}-{key}")
    if cached:
        return cached
    model = load_model(cfg["model"], Dataset(cfg["dataset"]), ThreatModel(cfg["threat_model"]),
                       checkpoint=weights).module
    arrays = score(model, x, y, cfg["eps"], cfg["threat_model"], deltas)
    save_per_example(cache, f"{name}-{key}", arrays)
    return arrays


def cached_entry(cache: Path, entry: str, n: int, deltas: list[float]) -> dict:
    """An entry's arrays read from the cache by file name; exits on a missing entry, other deltas or n."""
    arrays = load_per_example(cache, entry)
    expected = {"clean", "apgd-ce", "dist"} | {f"w2@{d:.6g}" for d in deltas}  # the keys ``score`` writes
    if set(arrays) != expected or any(len(a) != n for a in arrays.values()):
        raise SystemExit(f"--cached {entry}: not in {cache}/per_example with {n} images and deltas {deltas}")
    return arrays


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--delta", default="0.05,0.1,0.2")
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--reference", default=None, help="entry name (run folder name or 'pretrained')")
    parser.add_argument("--cache", type=Path, default=Path("benchmarks/records_holdout"))
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--cached", nargs="+", default=[], metavar="NAME-KEY", help="entries read from the cache")
    args = parser.parse_args()
    torch.manual_seed(0)
    deltas = list(parse_number_list(args.delta, "--delta"))
    first = json.loads((args.runs[0] / "run.json").read_text())["config"]
    _, held = load_train_data(Dataset(first["dataset"]), first["train_subset"], first["holdout"], first["data_dir"])
    x, y = held.x[-args.n:], held.y[-args.n:]
    entries = [("pretrained", None)] if args.pretrained else []
    entries += [(run.name, run / "model.safetensors") for run in args.runs]
    from_cache = {entry.rsplit("-", 1)[0]: cached_entry(args.cache, entry, len(x), deltas) for entry in args.cached}
    scores = {name: cached_score(name, w, first, x, y, deltas, args.cache) for name, w in entries} | from_cache
    ref_name = args.reference or entries[0][0]
    idx = np.random.default_rng(0).integers(0, len(x), (args.resamples, len(x)))
    print(f"{len(x)} held-out training images of {first['dataset']}, eps {first['eps']}; "
          f"differences to {ref_name} [95% paired bootstrap]")
    header = list(columns(scores[ref_name], deltas))
    print("| run | " + " | ".join(header) + " | " + " | ".join(f"diff {h}" for h in header) + " |")
    print("|---|" + "---|" * 2 * len(header))
    for name, arrays in scores.items():
        cells = columns(arrays, deltas)
        diffs = paired(arrays, scores[ref_name], deltas, idx) if name != ref_name else {h: "" for h in header}
        print(f"| {name} | " + " | ".join(f"{cells[h]:.1f}" for h in header) + " | "
              + " | ".join(diffs[h] for h in header) + " |", flush=True)


if __name__ == "__main__":
    main()
