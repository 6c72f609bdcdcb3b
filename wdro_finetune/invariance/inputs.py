"""MNIST inputs of the invariance construction: the classes, the allowed target class of each source class,
and the one conversion of images and labels (uint8 0..255 or float [0, 1]) to torch."""

from __future__ import annotations

import numpy as np
import torch

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


def as_images(x: np.ndarray | torch.Tensor) -> torch.Tensor:
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


def as_labels(y: np.ndarray | torch.Tensor, n: int) -> torch.Tensor:
    """(N,) integer labels -> int64 tensor, checked against the number of images."""
    t = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).long().flatten()
    if t.numel() != n:
        raise ValueError(f"got {t.numel()} labels for {n} images")
    return t
