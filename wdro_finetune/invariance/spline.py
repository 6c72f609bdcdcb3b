"""A vectorised torch emulation of the authors' ``scipy.ndimage`` transforms (``interpolation="scipy"``):
cubic B-spline rotate then shift with mirror prefilter, zero outside the image and uint8 rounding after each
pass; bit-exact on the reference images. Images in [0, 1]; grid cells ``(tx, ty, r)`` as in
:mod:`wdro_finetune.invariance.transforms`."""

from __future__ import annotations

import functools

import numpy as np
import torch


def spline_copies(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
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


def spline_paired(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
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
