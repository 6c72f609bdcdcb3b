"""Invariance positives for the L_ia triplet term: one invariance example per training image in use."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import numpy as np
import torch

from ..config import Dataset, ThreatModel
from ..data.datasets import split_size
from ..errors import UserError
from .cache import CacheKey, cache_path, load_set, missing_indices
from .generated import generated_set

log = logging.getLogger(__name__)

TRAIN_GRID = "fast"


def training_positives(dataset: Dataset, threat_model: ThreatModel, n_train: int, eps: float,
                       cache_dir: str | Path, data_dir: str | None = None, announce: bool = True) -> torch.Tensor:
    """(n_train, 1, 28, 28) float32: row i is an invariance example (l_inf radius ``eps``) of training image i.

    The training images in use are the first ``n_train`` of the MNIST training split (see
    ``data.training.load_train_data``). Examples come from the cache keyed by the whole split (so runs on
    different subsets share it); missing ones are generated once with the fast grid, and ``announce``
    says so on stderr before the (long) generation starts.
    """
    if dataset is not Dataset.MNIST or threat_model is not ThreatModel.LINF:
        raise UserError("--triplet ia / sa+ia needs MNIST with --threat-model Linf (the invariance construction "
                        "is defined for MNIST l_inf)")
    total = split_size(Dataset.MNIST, "train")
    key = CacheKey("mnist", float(eps), "train", total, TRAIN_GRID)
    wanted = np.arange(n_train)
    path = cache_path(cache_dir, key)
    todo = missing_indices(load_set(path, key) if path.is_file() else None, wanted)
    if todo.size and announce:
        print(f"L_ia: generating invariance examples for {todo.size} of {n_train} training images "
              f"({TRAIN_GRID} grid, eps {eps:g}) once; cached in {path}", file=sys.stderr, flush=True)
    inv = generated_set("train", total, eps, grid=TRAIN_GRID, cache_dir=cache_dir, data_dir=data_dir,
                        indices=wanted)
    return torch.from_numpy(inv.x).unsqueeze(1)
