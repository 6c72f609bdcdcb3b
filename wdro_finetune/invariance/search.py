"""Exact nearest-neighbour search: per source image and class, the training image nearest (Euclidean) to any
rigidly transformed copy of the source (step 1 of :mod:`wdro_finetune.invariance.construct`).

Everything is batched in torch: transformed copies come from one ``affine_grid``/``grid_sample``
call per batch of sources; distances are screened by a lower bound computed, like a distance, as
``||a||^2 + ||b||^2 - 2 a.b`` matrix products over chunks of training images, but on 131-dimensional
PCA features (6x fewer FLOPs than on 786 pixels), and exact distances are computed only for the
pairs the bound cannot exclude (see ``_ClassBank``); the search stays exact. Memory stays bounded:
about ``4 * source_batch * T * train_chunk`` bytes for a bound block (at most ~134 MB with the
defaults) plus two float32 copies of the training set.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from typing import Callable, Literal

import numpy as np
import torch

from .inputs import IMAGE_SIDE, NUM_CLASSES, TARGETS, as_images, as_labels
from .transforms import GridName, Interpolation, transform_copies, transform_grid

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]
_ROWS_PER_BATCH = 16384
_BOUND_DIMS = 128  # principal directions in the distance lower bound (see _ClassBank)
_UPPER_CANDIDATES = 16  # exact distances per chunk and source for the search's upper limit


@dataclasses.dataclass(frozen=True)
class NeighbourSearch:
    """Result of :func:`nearest_neighbours` for ``N`` sources and the 10 MNIST classes.

    index: (N, 10) int64 index into the training set, -1 where the class was not searched.
    transform: (N, 10, 3) float64 grid cell ``(tx, ty, r)`` (shift along rows and columns in pixels,
        rotation in degrees) under which the transformed source was nearest; NaN where not searched.
        The neighbour is aligned to the source by the negation of this cell (the authors store that
        negation in ``all_grids_nns``).
    sq_distance: (N, 10) float32 squared Euclidean distance in ``[0, 1]`` pixel units; inf where
        not searched.
    """

    index: np.ndarray
    transform: np.ndarray
    sq_distance: np.ndarray


def nearest_neighbours(
    x_src: np.ndarray | torch.Tensor,
    y_src: np.ndarray | torch.Tensor,
    train_x: np.ndarray | torch.Tensor,
    train_y: np.ndarray | torch.Tensor,
    *,
    grid: GridName = "full",
    classes: Literal["targets", "all"] = "targets",
    source_batch: int | None = None,
    train_chunk: int = 2048,
    interpolation: Interpolation = "bilinear",
    progress: Progress | None = None,
) -> NeighbourSearch:
    """Per source and class, the training image nearest to any transformed copy of the source.

    x_src: (N, 28, 28) sources; y_src: (N,) labels; train_x: (M, 28, 28); train_y: (M,).
    classes: ``"targets"`` searches the allowed targets of each source (:data:`TARGETS`),
        ``"all"`` the 9 classes other than the source's (as the authors' ``all_nns``).
    Exact ties go to the first transform in grid order, then the lowest training index (as the
    authors' argmin over transforms). Distances are summed in float32, so near-ties (relative
    gap below ~1e-6) may resolve differently from a float64 search.
    """
    xs = as_images(x_src)
    ys = as_labels(y_src, len(xs))
    train = as_images(train_x).reshape(-1, IMAGE_SIDE * IMAGE_SIDE)
    train_labels = as_labels(train_y, len(train))
    params = torch.as_tensor(transform_grid(grid))
    source_batch = source_batch or auto_batch(len(params))
    wanted = _class_mask(ys, classes)
    bank = _ClassBank.build(train, train_labels)
    n = len(xs)
    index = np.full((n, NUM_CLASSES), -1, np.int64)
    cell = np.full((n, NUM_CLASSES, 3), np.nan)
    dist = np.full((n, NUM_CLASSES), np.inf, np.float32)
    for start in range(0, n, source_batch):
        stop = min(start + source_batch, n)
        copies = transform_copies(xs[start:stop], params, interpolation).flatten(2)
        feats = bank.features(copies.flatten(0, 1)).reshape(copies.shape[0], len(params), -1)
        for k in range(NUM_CLASSES):
            rows = torch.nonzero(wanted[start:stop, k]).flatten()
            if rows.numel() == 0 or bank.size(k) == 0:
                continue
            best_d, best_t, best_i = bank.search(k, copies[rows].flatten(0, 1),
                                                 feats[rows].flatten(0, 1), len(params), train_chunk)
            index[start + rows.numpy(), k] = best_i.numpy()
            cell[start + rows.numpy(), k] = params[best_t].numpy()
            dist[start + rows.numpy(), k] = best_d.numpy()
        if progress is not None:
            progress(stop, n)
        log.debug("nearest neighbours: %d/%d sources", stop, n)
    return NeighbourSearch(index=index, transform=cell, sq_distance=dist)


@dataclasses.dataclass
class _ClassBank:
    """Training images grouped by class, with the features of a cheap lower bound on distances.

    With an orthonormal basis ``P`` (``_BOUND_DIMS`` principal directions of the training set),
    centred images ``a' = a - mean`` and residual norms ``r_a = |a' - P P^T a'|``:
    ``|a - b|^2 >= |P^T a' - P^T b'|^2 + (r_a - r_b)^2 =: lb(a, b)``, and ``lb`` is one matrix
    product with ``d + 3`` columns instead of 786. Per chunk of training images, the search
    computes ``lb`` for every (transform, image) pair, lowers each source's limit to the smallest
    exact distance among its ``_UPPER_CANDIDATES`` smallest bounds, and computes exact distances
    only where the bound does not exceed the limit (a small fraction of the pairs on MNIST). No
    pair above the limit can be the nearest, so the result is the exact nearest neighbour.
    """

    images: list[torch.Tensor]  # per class (M_k, D) float32
    bound_rhs: list[torch.Tensor]  # per class (M_k, d + 3): [-2 P^T b', -2 r_b, |b'|^2, 1]
    indices: list[torch.Tensor]  # per class (M_k,) original training indices, ascending
    mean: torch.Tensor  # (D,) float32
    basis: torch.Tensor  # (D, d) float32, orthonormal columns

    @classmethod
    def build(cls, train: torch.Tensor, labels: torch.Tensor) -> "_ClassBank":
        mean, basis = _principal_basis(train, _BOUND_DIMS)
        idx = [torch.nonzero(labels == k).flatten() for k in range(NUM_CLASSES)]
        imgs = [train[rows].contiguous() for rows in idx]
        rhs = []
        for m in imgs:
            proj, resid, sq = _bound_features(m, mean, basis)
            rhs.append(torch.cat([-2 * proj, -2 * resid[:, None], sq[:, None],
                                  torch.ones_like(sq)[:, None]], 1))
        return cls(images=imgs, bound_rhs=rhs, indices=idx, mean=mean, basis=basis)

    def size(self, k: int) -> int:
        return int(self.indices[k].numel())

    def features(self, flat: torch.Tensor) -> torch.Tensor:
        """Query side of the bound: rows (N, D) -> (N, d + 3) float32 [P^T a', r_a, 1, |a'|^2]."""
        proj, resid, sq = _bound_features(flat, self.mean, self.basis)
        return torch.cat([proj, resid[:, None], torch.ones_like(sq)[:, None], sq[:, None]], 1)

    def search(self, k: int, flat: torch.Tensor, feats: torch.Tensor, t: int, chunk: int):
        """Nearest class-``k`` image to any copy: copies flat (R * T, D) with their :meth:`features`
        -> (sq_dist (R,), transform index (R,), training index (R,)), scanning the class in chunks.
        Ties go to the lowest transform, then the lowest training index."""
        r = flat.shape[0] // t
        limit = torch.full((r,), math.inf)
        # float32 rounding of the bound grows with the norms it is assembled from
        slack = 1e-3 + 1e-5 * (feats[:, -1] + self.bound_rhs[k][:, -2].max())
        rows, cols, dists = [], [], []
        for start in range(0, self.size(k), chunk):
            bound = feats @ self.bound_rhs[k][start:start + chunk].T  # (R * T, C)
            # tighten each source's limit: exact distances of the best-bounded image of each of
            # its _UPPER_CANDIDATES best-bounded transforms
            per_row, best_col = bound.min(dim=1)
            pick = per_row.reshape(r, t).topk(min(_UPPER_CANDIDATES, t), dim=1, largest=False).indices
            pick = (pick + torch.arange(r)[:, None] * t).flatten()
            top = _pair_distances(flat, self.images[k], pick, start + best_col[pick])
            limit = torch.minimum(limit, top.reshape(r, -1).min(dim=1).values)
            margin = limit.repeat_interleave(t) * (1 + 1e-4) + slack
            row, col = torch.nonzero(bound <= margin[:, None], as_tuple=True)
            rows.append(row)
            cols.append(col + start)
            dists.append(_pair_distances(flat, self.images[k], row, col + start))
        rows, cols, dist = torch.cat(rows), torch.cat(cols), torch.cat(dists)
        src, cell = (rows // t).numpy(), (rows % t).numpy()
        order = np.lexsort((cols.numpy(), cell, dist.numpy(), src))  # source, distance, cell, index
        first = order[np.unique(src[order], return_index=True)[1]]
        return dist[first], torch.as_tensor(cell[first]), self.indices[k][cols[first]]


def _pair_distances(a: torch.Tensor, b: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                    batch: int = 16384) -> torch.Tensor:
    """(P,) squared distances |a[rows] - b[cols]|^2, summed directly (no expansion), in batches."""
    out = [((a[rows[i:i + batch]] - b[cols[i:i + batch]]) ** 2).sum(1)
           for i in range(0, len(rows), batch)]
    return torch.cat(out) if out else torch.zeros(0)


def _principal_basis(train: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and ``dims`` leading principal directions (D, dims) float32 of a training set,
    estimated on at most ~6000 evenly spaced images (any orthonormal basis keeps the bound valid)."""
    mean = train.double().mean(0)
    sample = train[:: max(1, len(train) // 6000)].double() - mean
    _, vectors = torch.linalg.eigh(sample.T @ sample)
    return mean.float(), vectors[:, -min(dims, train.shape[1]):].float().contiguous()


def _bound_features(x: torch.Tensor, mean: torch.Tensor, basis: torch.Tensor):
    """Rows (N, D) -> (projection (N, d), residual norm (N,), |x - mean|^2 (N,)). The residual is
    summed from the residual vector itself (no cancellation), so float32 suffices."""
    centred = x - mean
    proj = centred @ basis
    resid = (centred - proj @ basis.T).pow(2).sum(1).sqrt()
    return proj, resid, centred.pow(2).sum(1)


def auto_batch(n_transforms: int) -> int:
    """Sources per batch so that a batch holds about 16k transformed copies (51 MB of copies and,
    with ``train_chunk=2048``, at most 134 MB of distances)."""
    return max(1, math.ceil(_ROWS_PER_BATCH / n_transforms))


def _class_mask(ys: torch.Tensor, classes: str) -> torch.Tensor:
    """(N,) labels -> (N, 10) bool: which classes to search for each source."""
    if classes == "all":
        return torch.arange(NUM_CLASSES)[None] != ys[:, None]
    if classes == "targets":
        table = torch.zeros(NUM_CLASSES, NUM_CLASSES, dtype=torch.bool)
        for src, tgts in TARGETS.items():
            table[src, list(tgts)] = True
        return table[ys]
    raise ValueError(f"classes must be 'targets' or 'all', got {classes!r}")
