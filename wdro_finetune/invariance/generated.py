"""Generated invariance sets from the MNIST splits, through the on-disk cache (one call for the CLI,
the ``invariance`` metric and the engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..config import Dataset
from ..data.datasets import check_data_dir, find_offline_file, load_split, split_size
from ..errors import UserError
from .cache import CacheKey, load_or_generate
from .construct import InvarianceSet, generate_invariance_examples

DEFAULT_CACHE = Path("cache") / "invariance"


def generated_set(split: str, n: int, eps: float, grid: str = "full", cache_dir: str | Path = DEFAULT_CACHE,
                  data_dir: str | None = None, indices: np.ndarray | None = None,
                  progress=None) -> InvarianceSet:
    """Invariance examples of the first ``n`` images of an MNIST split (or of ``indices``), made once with
    the full 60k training set as neighbour pool and cached under ``cache_dir`` keyed by
    (dataset, eps, split, n, grid)."""
    if not 0 < eps <= 1:
        raise UserError(f"invariance eps must lie in (0, 1], got {eps}")
    if grid not in ("full", "fast"):
        raise UserError(f"--grid must be full or fast, got {grid!r}")
    if n > split_size(Dataset.MNIST, split):
        raise UserError(f"--n {n} exceeds the {split_size(Dataset.MNIST, split)} MNIST {split} images")

    def generate(todo: np.ndarray) -> InvarianceSet:  # data are read only when something is missing
        train = load_split(Dataset.MNIST, "train", None, data_dir=data_dir)
        sources = train if split == "train" else load_split(Dataset.MNIST, "test", n, data_dir=data_dir)
        idx = np.asarray(todo, dtype=np.int64)
        return generate_invariance_examples(sources.x[idx, 0], sources.y[idx], train.x[:, 0], train.y, eps=eps,
                                            grid=grid, source_index=idx, progress=progress)

    check_data_dir(data_dir)
    for part in {"train", split}:  # a corrupt data file fails before the cache is touched
        find_offline_file(Dataset.MNIST, part, 1, data_dir, False)
    key = CacheKey("mnist", float(eps), split, int(n), grid)
    return load_or_generate(cache_dir, key, generate, indices)
