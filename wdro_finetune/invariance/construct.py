"""l_inf invariance examples for MNIST (Tramer, Behrmann, Carlini, Papernot, Jacobsen, ICML 2020).

An invariance example changes the *true* class of ``x`` while staying within ``eps`` of it in l_inf
(METHODS.md section 6). Construction, per source image ``x`` with label ``y``:

1. For every allowed target class ``k`` of ``y`` (:data:`TARGETS`), find the training image of class
   ``k`` with the smallest Euclidean distance to any rigidly transformed copy of ``x``
   (:func:`nearest_neighbours`; transforms from :func:`transform_grid`).
2. Align that neighbour to ``x`` by the negated best transform (:func:`align_neighbours`).
3. Project it into the eps-ball around ``x`` (:func:`project_linf`).
4. Keep the candidate that removes the least ink from ``x`` (:func:`least_ink_choice`).

Everything is batched in torch: transformed copies come from one ``affine_grid``/``grid_sample``
call per batch of sources; distances are screened by a lower bound computed, like a distance, as
``||a||^2 + ||b||^2 - 2 a.b`` matrix products over chunks of training images, but on 131-dimensional
PCA features (6x fewer FLOPs than on 786 pixels), and exact distances are computed only for the
pairs the bound cannot exclude (see ``_ClassBank``); the search stays exact. Memory stays bounded:
about ``4 * source_batch * T * train_chunk`` bytes for a bound block (at most ~134 MB with the
defaults) plus two float32 copies of the training set.

Pixel scale: images enter as floats in ``[0, 1]`` (uint8 arrays in ``0..255`` are divided by 255);
``eps`` is in the same ``[0, 1]`` units.

Interpolation (``interpolation=``): the authors transform with ``scipy.ndimage`` (cubic B-spline,
rotate then shift, rounding to uint8 after each pass).

* ``"bilinear"`` (default) and ``"bicubic"``: one ``grid_sample`` pass over the composed transform.
  Fast, but transformed images differ from scipy's by ~2-4/255 on average, which changes about
  one nearest neighbour in five (measured on the authors' 100 sources; see
  ``benchmarks/bench_invariance.py``).
* ``"scipy"``: a vectorised torch emulation of the authors' two scipy passes (bit-exact on the
  reference images; inputs are rounded to the uint8 grid). It finds the authors' neighbours and
  reproduces ``automated_eps03`` up to float32 rounding; 10-40% slower than bilinear.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import Callable, Literal, Sequence

import numpy as np
import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)

#: Allowed target classes per MNIST source class (METHODS.md section 6).
TARGETS: dict[int, tuple[int, ...]] = {
    0: (4, 6, 8, 9),
    1: (4, 6, 7, 9),
    2: (8,),
    3: (8,),
    4: (8, 9),
    5: (3, 8),
    6: (0,),
    7: (2, 3),
    8: (3,),
    9: (3, 4, 5),
}

NUM_CLASSES = 10
IMAGE_SIDE = 28
GridName = Literal["full", "fast"]
Interpolation = Literal["bilinear", "bicubic", "scipy"]
Progress = Callable[[int, int], None]

#: (shift values in px, number of rotations) per grid; rotations span -30..30 degrees.
#: ``full`` is the authors' grid: 5 x 5 shifts x 31 rotations (step 2 deg) = 775 transforms.
#: ``fast`` keeps the corners and the identity: 3 x 3 shifts {-3, 0, 3} x 7 rotations
#: (step 10 deg) = 63 transforms, about 12x less work.
_GRIDS: dict[str, tuple[int, int]] = {"full": (5, 31), "fast": (3, 7)}
_MAX_SHIFT = 3.0
_MAX_ROTATION = 30.0
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
    xs = _as_images(x_src)
    ys = _as_labels(y_src, len(xs))
    train = _as_images(train_x)
    search = nearest_neighbours(
        xs, ys, train, train_y, grid=grid, classes="targets", source_batch=source_batch,
        train_chunk=train_chunk, interpolation=interpolation, progress=progress,
    )
    batch = source_batch or _auto_batch(len(transform_grid(grid)))
    examples, targets = _assemble(xs, ys, train, search, eps, batch, interpolation)
    index = np.arange(len(xs)) if source_index is None else np.asarray(source_index, np.int64)
    if index.shape != (len(xs),):
        raise ValueError(f"source_index has shape {index.shape}, expected ({len(xs)},)")
    return InvarianceSet(
        x=examples.numpy().astype(np.float32), source_index=index.astype(np.int64),
        source_label=ys.numpy().astype(np.int64), target_label=targets.numpy().astype(np.int64),
        eps=float(eps), grid=grid,
    )


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
    xs = _as_images(x_src)
    ys = _as_labels(y_src, len(xs))
    train = _as_images(train_x).reshape(-1, IMAGE_SIDE * IMAGE_SIDE)
    train_labels = _as_labels(train_y, len(train))
    params = torch.as_tensor(transform_grid(grid))
    source_batch = source_batch or _auto_batch(len(params))
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


def transform_grid(name: GridName = "full") -> np.ndarray:
    """(T, 3) float64 grid cells ``(tx, ty, r)``: shifts along rows and columns in pixels, rotation
    in degrees, in the authors' order (``itertools.product(tx, ty, r)``, rotation fastest)."""
    if name not in _GRIDS:
        raise ValueError(f"unknown transform grid {name!r}; choose one of {sorted(_GRIDS)}")
    n_shift, n_rot = _GRIDS[name]
    shifts = np.linspace(-_MAX_SHIFT, _MAX_SHIFT, n_shift)
    rotations = np.linspace(-_MAX_ROTATION, _MAX_ROTATION, n_rot)
    tx, ty, r = np.meshgrid(shifts, shifts, rotations, indexing="ij")
    return np.stack([tx.ravel(), ty.ravel(), r.ravel()], axis=1)


def transform_copies(
    images: torch.Tensor, params: torch.Tensor, interpolation: Interpolation = "bilinear"
) -> torch.Tensor:
    """Every transform applied to every image: (S, H, W) x (T, 3) -> (S, T, H, W).

    A transform ``(tx, ty, r)`` rotates by ``r`` degrees about the image centre (counter-clockwise
    as displayed, like ``scipy.ndimage.rotate(reshape=False)``) and then shifts by ``tx`` rows and
    ``ty`` columns (like ``scipy.ndimage.shift``), in one interpolation pass with zero padding.
    The sources ride in the channel dimension, so one ``grid_sample`` call does the whole batch.
    ``interpolation="scipy"`` instead reproduces the authors' two scipy passes (see
    :func:`_spline_copies`).
    """
    if interpolation == "scipy":
        return _spline_copies(images, params)
    s, h, w = images.shape
    sampling = _sampling_grid(params.to(images.dtype), h, w)  # (T, H, W, 2)
    flat = sampling.reshape(1, -1, w, 2)
    out = F.grid_sample(images[None], flat, mode=interpolation, padding_mode="zeros",
                        align_corners=True)
    return out.reshape(s, params.shape[0], h, w)


def rigid_transform(
    images: torch.Tensor, params: torch.Tensor, interpolation: Interpolation = "bilinear"
) -> torch.Tensor:
    """One transform per image: (B, H, W) with (B, 3) ``(tx, ty, r)`` -> (B, H, W) (see
    :func:`transform_copies` for the convention)."""
    if interpolation == "scipy":
        return _spline_paired(images, params)
    b, h, w = images.shape
    sampling = _sampling_grid(params.to(images.dtype), h, w)
    out = F.grid_sample(images[:, None], sampling, mode=interpolation, padding_mode="zeros",
                        align_corners=True)
    return out[:, 0]


def align_neighbours(
    neighbours: torch.Tensor, cells: torch.Tensor, interpolation: Interpolation = "bilinear"
) -> torch.Tensor:
    """Align neighbours to their sources: (B, H, W) images, (B, 3) grid cells -> (B, H, W).

    Applies the negated cell ``(-tx, -ty, -r)`` with the same rotate-then-shift convention, which
    is how the authors produced ``all_nns`` (``shift(rotate(nn, -r), (-tx, -ty))``). Note this is
    not the exact inverse of rotate-then-shift (that would undo the shift first); we follow the
    reference data.
    """
    return rigid_transform(neighbours, -cells, interpolation)


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


# --------------------------------------------------------------------------------------------
# helpers


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


def _spline_copies(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``interpolation="scipy"`` for :func:`transform_copies`: (S, H, W) x (T, 3) -> (S, T, H, W).

    Emulates ``shift(rotate(x_uint8, r, reshape=False), (tx, ty))`` of ``scipy.ndimage`` (cubic
    B-spline, mirror prefilter, zero outside the image, uint8 rounding after each pass): every
    distinct rotation once, then every distinct row and column shift (a shift is separable:
    ``A(tx) @ img @ B(ty)^T``), then the grid cells are picked out. Images are taken in 0..255
    units rounded to integers (the authors' uint8).
    """
    s, h, w = images.shape
    angles, which_angle = torch.unique(params[:, 2].double(), return_inverse=True)
    row_shifts, which_row = torch.unique(params[:, 0].double(), return_inverse=True)
    col_shifts, which_col = torch.unique(params[:, 1].double(), return_inverse=True)
    u8 = (images.double() * 255.0).round()
    rotated = _spline_rotate(u8, angles)  # (S, R, H, W)
    rows = torch.stack([_shift_matrix(h, float(t)) for t in row_shifts])  # (X, H, H)
    cols = torch.stack([_shift_matrix(w, float(t)) for t in col_shifts])  # (Y, W, W)
    moved = torch.einsum("xij,srjk->srxik", rows, rotated)
    moved = torch.einsum("srxik,ylk->srxyil", moved, cols)  # (S, R, X, Y, H, W)
    moved = moved[:, which_angle, which_row, which_col].clamp(0.0, 255.0).round()
    return (moved / 255.0).float()


def _spline_paired(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """``interpolation="scipy"`` for :func:`rigid_transform`: one (tx, ty, r) per image."""
    h, w = images.shape[1:]
    u8 = (images.double() * 255.0).round()
    rotated = _spline_rotate(u8, params[:, 2].double(), paired=True)[:, 0]
    rows = torch.stack([_shift_matrix(h, float(t)) for t in params[:, 0]])
    cols = torch.stack([_shift_matrix(w, float(t)) for t in params[:, 1]])
    moved = (rows @ rotated @ cols.transpose(1, 2)).clamp(0.0, 255.0).round()
    return (moved / 255.0).to(images.dtype)


def _spline_rotate(images: torch.Tensor, angles: torch.Tensor, paired: bool = False) -> torch.Tensor:
    """``scipy.ndimage.rotate(reshape=False)``, order 3, rounded to uint8 values: images (B, H, W)
    float64 0..255, angles (R,) degrees -> (B, R, H, W); with ``paired``, angles (B,) -> (B, 1, H, W)."""
    b, h, w = images.shape
    coef = (_prefilter(h) @ images @ _prefilter(w).T).reshape(b, h * w)
    rad = torch.deg2rad(angles)[:, None, None]
    r, c = torch.meshgrid(torch.arange(h, dtype=torch.float64) - (h - 1) / 2,
                          torch.arange(w, dtype=torch.float64) - (w - 1) / 2, indexing="ij")
    rows = torch.cos(rad) * r + torch.sin(rad) * c + (h - 1) / 2  # input coordinates (R, H, W)
    cols = -torch.sin(rad) * r + torch.cos(rad) * c + (w - 1) / 2
    if paired:
        rows, cols = rows[:, None], cols[:, None]  # (B, 1, H, W)
    else:
        rows, cols = rows[None], cols[None]  # (1, R, H, W)
    out = torch.zeros(b, *rows.shape[1:], dtype=torch.float64)
    base_r, base_c = rows.floor(), cols.floor()
    for dr in (-1, 0, 1, 2):
        kr = base_r + dr
        wr, kr = _bspline3(rows - kr), _mirror(kr, h)
        for dc in (-1, 0, 1, 2):
            kc = base_c + dc
            index = (kr * w + _mirror(kc, w)).long().reshape(rows.shape[0], -1).expand(b, -1)
            out += wr * _bspline3(cols - kc) * torch.gather(coef, 1, index).reshape(out.shape)
    inside = (rows >= 0) & (rows <= h - 1) & (cols >= 0) & (cols <= w - 1)
    return torch.where(inside, out, 0.0).clamp(0.0, 255.0).round()


@functools.lru_cache(maxsize=64)
def _shift_matrix(n: int, shift: float) -> torch.Tensor:
    """(n, n) float64 matrix of a 1-D ``scipy.ndimage.shift`` by ``shift`` (order 3, constant 0):
    output i = spline at input coordinate i - shift, zero outside [0, n - 1]."""
    u = torch.arange(n, dtype=torch.float64) - shift
    weights = torch.zeros(n, n, dtype=torch.float64)
    for d in (-1, 0, 1, 2):
        k = u.floor() + d
        weights.index_put_((torch.arange(n), _mirror(k, n).long()), _bspline3(u - k), accumulate=True)
    weights[(u < 0) | (u > n - 1)] = 0.0
    return weights @ _prefilter(n)


def _bspline3(x: torch.Tensor) -> torch.Tensor:
    """Cubic B-spline kernel."""
    x = x.abs()
    return torch.where(x < 1, 2 / 3 - x**2 + x**3 / 2, torch.where(x < 2, (2 - x) ** 3 / 6, 0.0))


def _mirror(k: torch.Tensor, n: int) -> torch.Tensor:
    """Mirror-reflect integer indices into [0, n - 1] (scipy's ``mirror`` extension)."""
    k = k.abs()
    return torch.where(k > n - 1, 2 * (n - 1) - k, k).clamp(0, n - 1)


@functools.lru_cache(maxsize=None)
def _prefilter(n: int) -> torch.Tensor:
    """(n, n) matrix turning samples into cubic B-spline coefficients, mirror boundary: the inverse
    of the collocation matrix (1/6, 4/6, 1/6) with reflected indices at both ends."""
    colloc = np.zeros((n, n))
    for i in range(n):
        colloc[i, i] += 4 / 6
        for k in (i - 1, i + 1):
            colloc[i, abs(k) if k < n else 2 * (n - 1) - k] += 1 / 6
    return torch.as_tensor(np.linalg.inv(colloc))


def _auto_batch(n_transforms: int) -> int:
    """Sources per batch so that a batch holds about 16k transformed copies (51 MB of copies and,
    with ``train_chunk=2048``, at most 134 MB of distances)."""
    return max(1, math.ceil(_ROWS_PER_BATCH / n_transforms))


def _sampling_grid(params: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(T, 3) cells -> (T, H, W, 2) ``grid_sample`` coordinates (x = column, y = row, align_corners).

    Output pixel ``p`` reads input pixel ``R(-r) (p - t - c) + c`` with ``c`` the image centre:
    rotate by ``r`` then shift by ``t = (tx, ty)``.
    """
    theta_r = torch.deg2rad(params[:, 2])
    cos, sin = torch.cos(theta_r), torch.sin(theta_r)
    # (x, y) = (column, row); normalised coordinates are (p - c) / c with c = (side - 1) / 2.
    mat = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], -2)  # (T,2,2)
    shift = torch.stack([params[:, 1] / ((w - 1) / 2), params[:, 0] / ((h - 1) / 2)], -1)
    offset = -(mat @ shift[..., None])
    theta = torch.cat([mat, offset], dim=-1)  # (T, 2, 3)
    return F.affine_grid(theta, [params.shape[0], 1, h, w], align_corners=True)


def _as_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(N, 28, 28) or (N, 1, 28, 28) uint8 0..255 or float 0..1 -> (N, 28, 28) float32 in [0, 1]."""
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim == 4 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim != 3:
        raise ValueError(f"expected images of shape (N, 28, 28), got {tuple(t.shape)}")
    if t.dtype == torch.uint8:
        return t.float().div_(255.0)
    t = t.float()
    if t.numel() and (float(t.min()) < 0.0 or float(t.max()) > 1.0):
        raise ValueError("float images must be in [0, 1]; divide 0..255 images by 255")
    return t.contiguous()


def _as_labels(y: np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    """(N,) integer labels -> int64 tensor, checked against the number of images."""
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().flatten()
    if t.numel() != n:
        raise ValueError(f"got {t.numel()} labels for {n} images")
    return t


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
