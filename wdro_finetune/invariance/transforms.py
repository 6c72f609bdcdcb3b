"""Rigid transforms of MNIST images: the grid of shifts and rotations the neighbour search runs over, every
transform applied to every image in one ``grid_sample`` call, and the alignment of a neighbour to its source.

Interpolation (``interpolation=``): the authors transform with ``scipy.ndimage`` (cubic B-spline,
rotate then shift, rounding to uint8 after each pass).

* ``"bilinear"`` (default) and ``"bicubic"``: one ``grid_sample`` pass over the composed transform.
  Fast, but transformed images differ from scipy's by ~2-4/255 on average, which changes about
  one nearest neighbour in five (measured on the authors' 100 sources; see
  ``benchmarks/bench_invariance.py``).
* ``"scipy"``: a vectorised torch emulation of the authors' two scipy passes
  (:mod:`wdro_finetune.invariance.spline`; bit-exact on the reference images; inputs are rounded to the
  uint8 grid). It finds the authors' neighbours and reproduces ``automated_eps03`` up to float32 rounding;
  10-40% slower than bilinear.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from .spline import spline_copies, spline_paired

GridName = Literal["full", "fast"]
Interpolation = Literal["bilinear", "bicubic", "scipy"]

#: (shift values in px, number of rotations) per grid; rotations span -30..30 degrees.
#: ``full`` is the authors' grid: 5 x 5 shifts x 31 rotations (step 2 deg) = 775 transforms.
#: ``fast`` keeps the corners and the identity: 3 x 3 shifts {-3, 0, 3} x 7 rotations
#: (step 10 deg) = 63 transforms, about 12x less work.
_GRIDS: dict[str, tuple[int, int]] = {"full": (5, 31), "fast": (3, 7)}
_MAX_SHIFT = 3.0
_MAX_ROTATION = 30.0


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
    :func:`spline_copies`).
    """
    if interpolation == "scipy":
        return spline_copies(images, params)
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
        return spline_paired(images, params)
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
