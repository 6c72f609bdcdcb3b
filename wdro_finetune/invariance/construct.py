"""l_inf invariance examples for MNIST (Tramer, Behrmann, Carlini, Papernot, Jacobsen, ICML 2020).

An invariance example changes the *true* class of ``x`` while staying within ``eps`` of it in l_inf
(METHODS.md section 6). Construction, per source image ``x`` with label ``y``:

1. For every allowed target class ``k`` of ``y`` (:data:`~wdro_finetune.invariance.inputs.TARGETS`), find the training image of class
   ``k`` with the smallest Euclidean distance to any rigidly transformed copy of ``x``
   (:func:`~wdro_finetune.invariance.search.nearest_neighbours`; transforms from
   :func:`~wdro_finetune.invariance.transforms.transform_grid`).
2. Align that neighbour to ``x`` by the negated best transform
   (:func:`~wdro_finetune.invariance.transforms.align_neighbours`).
3. Project it into the eps-ball around ``x`` (:func:`project_linf`).
4. Keep the candidate that removes the least ink from ``x`` (:func:`least_ink_choice`).

The search is exact and batched (:mod:`wdro_finetune.invariance.search`); the interpolation of the transforms
is bilinear by default or the authors' scipy splines (:mod:`wdro_finetune.invariance.transforms`).

Pixel scale: images enter as floats in ``[0, 1]`` (uint8 arrays in ``0..255`` are divided by 255);
``eps`` is in the same ``[0, 1]`` units.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import numpy as np
import torch

from .inputs import as_images, as_labels
from .search import NeighbourSearch, Progress, auto_batch, nearest_neighbours
from .transforms import GridName, Interpolation, align_neighbours, transform_grid


@dataclasses.dataclass(frozen=True)
class InvarianceSet:
    """Generated invariance examples.

    x: (N, 28, 28) float32 in [0, 1]. source_index: (N,) int64 index of each source in its data
    set. source_label / target_label: (N,) int64 MNIST classes (the target is the class of the
    chosen neighbour, i.e. the intended new true class). eps: l_inf radius in [0, 1] units.
    grid: name of the transform grid used in the search.
    """

    x: np.ndarray
    source_index: np.ndarray
    source_label: np.ndarray
    target_label: np.ndarray
    eps: float
    grid: str

    def __len__(self) -> int:
        return int(self.x.shape[0])


def generate_invariance_examples(
    x_src: np.ndarray | torch.Tensor,
    y_src: np.ndarray | torch.Tensor,
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    *,
    eps: float,
    grid: GridName = "full",
    source_index: np.ndarray | Sequence[int] | None = None,
    source_batch: int | None = None,
    train_chunk: int = 2048,
    interpolation: Interpolation = "bilinear",
    progress: Progress | None = None,
) -> InvarianceSet:
    """Build one l_inf invariance example per source image (steps 1-4 of the module docstring).

    x_src: (N, 28, 28) float in [0, 1] (or uint8 in 0..255); y_src: (N,) MNIST labels.
    train_x: (M, 28, 28) training images, same scale rules; train_y: (M,) labels.
    eps: l_inf radius in [0, 1] pixel units (0.3 or 0.4 in the paper).
    source_index: (N,) indices recorded in the result (default ``arange(N)``).
    source_batch / train_chunk: sources and training images per distance block (memory knob);
        ``source_batch=None`` picks ``ceil(16384 / T)`` for a grid of ``T`` transforms.
    progress: called as ``progress(done, total)`` with numbers of sources searched.
    """
    xs = as_images(x_src)
    ys = as_labels(y_src, len(xs))
    train = as_images(train_x)
    search = nearest_neighbours(
        xs, ys, train, train_y, grid=grid, classes="targets", source_batch=source_batch,
        train_chunk=train_chunk, interpolation=interpolation, progress=progress,
    )
    batch = source_batch or auto_batch(len(transform_grid(grid)))
    examples, targets = _assemble(xs, ys, train, search, eps, batch, interpolation)
    index = np.arange(len(xs)) if source_index is None else np.asarray(source_index, np.int64)
    if index.shape != (len(xs),):
        raise ValueError(f"source_index has shape {index.shape}, expected ({len(xs)},)")
    return InvarianceSet(
        x=examples.numpy().astype(np.float32), source_index=index.astype(np.int64),
        source_label=ys.numpy().astype(np.int64), target_label=targets.numpy().astype(np.int64),
        eps=float(eps), grid=grid,
    )


def project_linf(
    x: torch.Tensor, neighbour: torch.Tensor, eps: float, pixel_max: float = 1.0
) -> torch.Tensor:
    """Project an aligned neighbour into the l_inf eps-ball around ``x`` (METHODS.md 6, step 3).

    Where ``|nn - x| <= eps`` and ``x > 0`` take ``nn``; where ``|nn - x| > eps`` move ``x`` by
    ``eps`` toward ``nn``; elsewhere (``x == 0`` and ``nn`` within eps) keep ``x``. Then clip to
    ``[x - eps, x + eps]`` and ``[0, pixel_max]``. Shapes broadcast; ``eps`` in the images' units.
    """
    diff = neighbour - x
    out = torch.where((diff.abs() <= eps) & (x > 0), neighbour, x)
    out = torch.where(diff.abs() > eps, x + eps * torch.sign(diff), out)
    out = torch.minimum(torch.maximum(out, x - eps), x + eps)
    return out.clamp(0.0, pixel_max)


def least_ink_choice(
    x: torch.Tensor, candidates: torch.Tensor, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Among valid candidates keep the one removing the least ink ``sum(max(x - c, 0))``.

    x: (N, H, W); candidates: (N, K, H, W); valid: (N, K) bool with at least one True per row.
    Returns (choice (N,) int64 index into K, chosen (N, H, W)). Ties go to the lowest index.
    Ink is summed in float64 so that ties are exact.
    """
    removed = (x[:, None] - candidates).clamp_min(0).double().flatten(2).sum(-1)
    removed = removed.masked_fill(~valid, math.inf)
    choice = removed.argmin(dim=1)
    chosen = candidates[torch.arange(len(x)), choice]
    return choice, chosen


def _assemble(
    xs: torch.Tensor, ys: torch.Tensor, train: torch.Tensor, search: NeighbourSearch,
    eps: float, batch: int, interpolation: Interpolation,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Steps 2-4 for all sources, ``batch`` at a time: returns (x_inv (N, H, W), target (N,))."""
    valid_all = torch.as_tensor(search.index >= 0)
    if not bool(valid_all.any(dim=1).all()):
        raise ValueError("a source has no searched target class (empty class in the training set?)")
    outs, targets = [xs[:0]], [torch.zeros(0, dtype=torch.long)]
    for start in range(0, len(xs), batch):
        sl = slice(start, start + batch)
        idx = torch.as_tensor(search.index[sl])
        cells = torch.as_tensor(search.transform[sl]).nan_to_num(0.0)
        nbrs = train[idx.clamp_min(0).flatten()]
        aligned = align_neighbours(nbrs, cells.reshape(-1, 3), interpolation)
        aligned = aligned.reshape(idx.shape + aligned.shape[-2:])
        cands = project_linf(xs[sl, None], aligned, eps)
        choice, chosen = least_ink_choice(xs[sl], cands, valid_all[sl])
        outs.append(chosen)
        targets.append(choice)
    return torch.cat(outs), torch.cat(targets)
