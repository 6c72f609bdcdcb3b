"""Benchmark and reference check of the l_inf invariance construction (MNIST, Tramer et al. 2020).

Three parts (each can be skipped):

1. ``reference``: for each interpolation mode, on the authors' 100 automated sources, the full-grid
   search over all 60k training images (all 9 other classes, as in ``linf_reference/all_nns``)
   against their neighbours: share of identical training images, identical grid cells, and mean
   |aligned neighbour - all_nns|; then
   the full eps=0.3 pipeline against ``linf/automated_eps03`` (share of identical target classes,
   mean absolute pixel difference) and, for information, eps=0.4 against ``automated_eps04``.
2. ``speed``: images per second of :func:`generate_invariance_examples` for both grids (and the
   full grid with ``interpolation="scipy"``).
3. ``loop``: a straightforward loop (per source, per transform: one ``grid_sample`` and a distance
   to the allowed-class training images, vectorised only over training images), timed on a few
   sources and scaled linearly to the benchmark size; the speed-up is vectorised / loop time.

Run:  .venv/bin/python benchmarks/bench_invariance.py   (about 6 minutes on 2 idle cores)
      .venv/bin/python benchmarks/bench_invariance.py --parts speed,loop --n 100
"""

from __future__ import annotations

import argparse
import logging
import os
import time
from pathlib import Path

import numpy as np
import torch

from wdro_finetune.invariance.construct import (
    generate_invariance_examples,
    least_ink_choice,
    project_linf,
)
from wdro_finetune.invariance.inputs import TARGETS
from wdro_finetune.invariance.search import nearest_neighbours
from wdro_finetune.invariance.transforms import align_neighbours, rigid_transform, transform_grid

log = logging.getLogger("bench_invariance")
DATA = Path(os.environ.get("WDRO_DATA_DIR", Path(__file__).resolve().parents[2] / "shared" / "data"))
TRAMER = DATA / "tramer_invariance"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", default="reference,speed,loop")
    parser.add_argument("--n", type=int, default=100, help="sources for the speed benchmark")
    parser.add_argument("--loop-sources", type=int, default=2, help="sources timed in the loop")
    parser.add_argument("--interpolations", default="bilinear,bicubic,scipy")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    data = load_data()
    log.info("torch %s, %d threads, load average %s (wall times grow when other processes run)",
             torch.__version__, torch.get_num_threads(), " ".join(f"{v:.1f}" for v in os.getloadavg()))
    parts = args.parts.split(",")
    if "reference" in parts:
        for mode in args.interpolations.split(","):
            reference_report(data, mode)
    vec_time = speed_report(data, args.n) if "speed" in parts or "loop" in parts else None
    if "loop" in parts:
        loop_report(data, args.n, args.loop_sources, vec_time)


def load_data() -> dict:
    """MNIST (uint8) and the authors' reference arrays for the 100 automated sources."""
    with np.load(DATA / "mnist_train.npz") as tr, np.load(DATA / "mnist_test.npz") as te:
        data = dict(train_x=tr["x"], train_y=tr["y"].astype(np.int64), test_x=te["x"],
                    test_y=te["y"].astype(np.int64))
    idx = np.load(TRAMER / "indexs.npy")
    ref = TRAMER / "linf_reference"
    data.update(index=idx, x=data["test_x"][idx], y=data["test_y"][idx],
                nns=np.load(ref / "all_nns.npy"), y_nns=np.load(ref / "all_y_nns.npy").astype(np.int64),
                grids=np.load(ref / "all_grids_nns.npy"),
                eps03=np.load(TRAMER / "linf" / "automated_eps03.npy"),
                eps04=np.load(TRAMER / "linf" / "automated_eps04.npy"))
    return data


# ---------------------------------------------------------------------------------- reference


def reference_report(data: dict, mode: str) -> None:
    """Part 1 for one interpolation mode (see the module docstring)."""
    ref_index = reference_train_index(data)
    log.info("[reference, %s] recovered %d/%d of the authors' neighbour indices", mode,
             int((ref_index >= 0).sum()), ref_index.size)
    start = time.perf_counter()
    found = nearest_neighbours(data["x"], data["y"], data["train_x"], data["train_y"],
                               grid="full", classes="all", interpolation=mode)
    elapsed = time.perf_counter() - start
    cls = data["y_nns"]
    ours = np.take_along_axis(found.index, cls, axis=1)
    cells = np.take_along_axis(found.transform, cls[..., None], axis=1)
    same = ours == ref_index
    same_cell = np.all(-cells == data["grids"], axis=-1)
    allowed = np.array([[int(c) in TARGETS[int(s)] for c in row] for s, row in zip(data["y"], cls)])
    aligned = align_neighbours(torch.as_tensor(data["train_x"][ours.ravel()] / 255.0, dtype=torch.float32),
                               torch.as_tensor(cells.reshape(-1, 3), dtype=torch.float32), mode)
    diff = np.abs(aligned.numpy().reshape(ours.shape + (28, 28)) - data["nns"] / 255.0) * 255
    log.info("[reference, %s] all-classes full search of 100 sources: %.1f s", mode, elapsed)
    log.info("  same training image: %.3f (%d/%d); allowed targets only: %.3f (%d/%d)",
             same.mean(), same.sum(), same.size, same[allowed].mean(), same[allowed].sum(), allowed.sum())
    log.info("  same image and grid cell: %.3f", (same & same_cell).mean())
    log.info("  mean |aligned neighbour - all_nns| (0..255): %.2f where same image, %.2f overall",
             diff[same].mean(), diff.mean())
    pipeline_report(data, mode)


def pipeline_report(data: dict, mode: str) -> None:
    """Full pipeline vs the authors' automated_eps03 (and eps04 for information)."""
    x = data["x"] / 255.0
    for eps, key in ((0.3, "eps03"), (0.4, "eps04")):
        out = generate_invariance_examples(data["x"], data["y"], data["train_x"], data["train_y"],
                                           eps=eps, interpolation=mode)
        mad = np.abs(out.x - data[key] / 255.0).mean() * 255
        linf = np.abs(out.x - x).max()
        msg = f"  eps={eps}: mean |ours - automated_{key}| = {mad:.2f}/255, max l_inf to source {linf:.6f}"
        if key == "eps03":
            share = np.mean(out.target_label == reference_targets(data))
            exact = np.mean(np.all(np.abs(out.x * 255 - data[key]) < 1e-3, axis=(1, 2)))
            msg += f", same target class {share:.2f}, identical images (to 1e-3/255) {exact:.2f}"
        log.info(msg)


def reference_train_index(data: dict) -> np.ndarray:
    """(100, 9) training index of each all_nns neighbour: undo the stored alignment approximately,
    take the nearest training image of the class, and keep it only if scipy re-aligns it to the
    stored neighbour bit for bit (else -1)."""
    from scipy.ndimage import rotate, shift

    nns, grids = data["nns"].reshape(-1, 28, 28), data["grids"].reshape(-1, 3)
    back = np.stack([rotate(shift(n.astype(np.float64), -g[:2]), -g[2], reshape=False)
                     for n, g in zip(nns, grids)]).reshape(len(nns), -1)
    train = torch.as_tensor(data["train_x"].reshape(len(data["train_x"]), -1), dtype=torch.float32)
    dist = torch.cdist(torch.as_tensor(back, dtype=torch.float32), train)
    wrong = torch.as_tensor(data["train_y"][None, :] != data["y_nns"].reshape(-1, 1))
    found = dist.masked_fill(wrong, float("inf")).argmin(1).numpy()
    proven = [np.array_equal(shift(rotate(data["train_x"][k], g[2], reshape=False), g[:2]), n)
              for k, g, n in zip(found, grids, nns)]
    return np.where(proven, found, -1).reshape(data["y_nns"].shape)


def reference_targets(data: dict) -> np.ndarray:
    """(100,) target class the authors' automated_eps03 example was built from."""
    x = torch.as_tensor(data["x"], dtype=torch.float64)
    cands = project_linf(x[:, None], torch.as_tensor(data["nns"], dtype=torch.float64), 0.3 * 255, 255.0)
    valid = torch.as_tensor([[int(c) in TARGETS[int(s)] for c in r] for s, r in zip(data["y"], data["y_nns"])])
    choice, _ = least_ink_choice(x, cands, valid)
    return data["y_nns"][np.arange(len(x)), choice.numpy()]


# -------------------------------------------------------------------------------------- speed


def speed_report(data: dict, n: int) -> float:
    """Images per second on the first ``n`` test images for both grids (bilinear) and for the full
    grid with the scipy emulation; returns the full-grid bilinear wall time."""
    x, y = data["test_x"][:n], data["test_y"][:n]
    times = {}
    for grid, mode in (("full", "bilinear"), ("fast", "bilinear"), ("full", "scipy")):
        with _Timer() as timer:
            generate_invariance_examples(x, y, data["train_x"], data["train_y"], eps=0.3, grid=grid,
                                         interpolation=mode)
        times[grid, mode] = timer.wall
        log.info("[speed] grid=%s (%d transforms), %s: %d images in %.1f s wall (%.1f s CPU) = "
                 "%.2f images/s", grid, len(transform_grid(grid)), mode, n, timer.wall, timer.cpu,
                 n / timer.wall)
    return times["full", "bilinear"]


def loop_report(data: dict, n: int, loop_sources: int, vec_time: float) -> None:
    """Time the per-source, per-transform loop on ``loop_sources`` images and scale to ``n``."""
    x = torch.as_tensor(data["test_x"][:loop_sources] / 255.0, dtype=torch.float32)
    y = data["test_y"][:loop_sources]
    train = torch.as_tensor(data["train_x"].reshape(-1, 784) / 255.0, dtype=torch.float32)
    with _Timer() as timer:
        for s in range(loop_sources):
            loop_one_source(x[s], int(y[s]), train, data["train_y"], 0.3)
    per_image = timer.wall / loop_sources
    log.info("[loop] per-source/per-transform loop: %.2f s wall (%.2f s CPU) per image, timed on "
             "%d images; scaled to %d: %.0f s", per_image, timer.cpu / loop_sources, loop_sources,
             n, per_image * n)
    log.info("[loop] speed-up of the vectorised full-grid pipeline (wall): %.0fx",
             per_image * n / vec_time)


class _Timer:
    """Wall-clock and process CPU seconds of a ``with`` block."""

    def __enter__(self) -> "_Timer":
        self._wall, self._cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._wall
        self.cpu = time.process_time() - self._cpu


def loop_one_source(x: torch.Tensor, y: int, train: torch.Tensor, train_y: np.ndarray, eps: float):
    """The straightforward construction for one (28, 28) source: Python loops over transforms and
    target classes; distances vectorised over the training images of a class only."""
    grid = torch.as_tensor(transform_grid("full"), dtype=torch.float32)
    members = {k: torch.as_tensor(np.nonzero(train_y == k)[0]) for k in TARGETS[y]}
    images = {k: train[rows] for k, rows in members.items()}
    best = {k: (float("inf"), 0, 0) for k in TARGETS[y]}
    for t in range(len(grid)):
        moved = rigid_transform(x[None], grid[t:t + 1]).reshape(1, -1)
        for k, rows in members.items():
            dist = ((images[k] - moved) ** 2).sum(1)
            value, j = dist.min(0)
            if float(value) < best[k][0]:
                best[k] = (float(value), t, int(rows[j]))
    cands, valid = [], []
    for k, (_, t, j) in best.items():
        aligned = align_neighbours(train[j].reshape(1, 28, 28), grid[t:t + 1])[0]
        cands.append(project_linf(x, aligned, eps))
        valid.append(True)
    return least_ink_choice(x[None], torch.stack(cands)[None], torch.tensor([valid]))


if __name__ == "__main__":
    main()
