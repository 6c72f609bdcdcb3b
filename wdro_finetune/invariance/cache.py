"""On-disk cache of generated invariance sets, keyed by (dataset, eps, split, n, grid).

One ``.npz`` per key holds ``x`` (N, 28, 28) float32, ``source_index``, ``source_label``,
``target_label`` (N,) int64 and the metadata ``dataset``, ``split``, ``n``, ``eps``, ``grid``,
``created`` (UTC ISO time) and ``format``. Files are written atomically (temp file in the same
folder, fsync, ``os.replace``), so a crash leaves the old file or the new one, never half of one.
A cached file may hold only some of the requested sources: :func:`missing_indices` says which
are absent and :func:`load_or_generate` builds only those, merges and rewrites the file.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import re
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..utils.fileio import atomic_write, file_lock
from .construct import InvarianceSet

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
_ARRAYS = ("x", "source_index", "source_label", "target_label")
_SAFE = re.compile(r"^[A-Za-z0-9_.-]+$")


@dataclasses.dataclass(frozen=True)
class CacheKey:
    """What identifies a cached set: data set and split of the sources, how many sources (``n``),
    l_inf radius ``eps`` in [0, 1] units and the transform grid name."""

    dataset: str
    eps: float
    split: str
    n: int
    grid: str

    def __post_init__(self) -> None:
        for field in ("dataset", "split", "grid"):
            if not _SAFE.match(getattr(self, field)):
                raise ValueError(f"{field} {getattr(self, field)!r} must match {_SAFE.pattern}")
        if self.n < 0 or not 0.0 < self.eps <= 1.0:
            raise ValueError(f"bad cache key: n={self.n}, eps={self.eps}")

    def filename(self) -> str:
        """The one place the file name is built, e.g. ``mnist-test-n100-eps0.3-full.npz``."""
        return f"{self.dataset}-{self.split}-n{self.n}-eps{self.eps:.6g}-{self.grid}.npz"


def cache_path(cache_dir: str | Path, key: CacheKey) -> Path:
    """Path of the cache file for ``key`` under ``cache_dir``."""
    return Path(cache_dir) / key.filename()


def missing_indices(cached: InvarianceSet | None, requested: Sequence[int] | np.ndarray) -> np.ndarray:
    """(K,) int64 requested source indices not in ``cached`` (all of them when it is None), in
    the requested order, without duplicates."""
    want = np.asarray(requested, dtype=np.int64).reshape(-1)
    _, first = np.unique(want, return_index=True)
    want = want[np.sort(first)]
    if cached is None:
        return want
    return want[~np.isin(want, cached.source_index)]


def load_or_generate(
    cache_dir: str | Path,
    key: CacheKey,
    generate: Callable[[np.ndarray], InvarianceSet],
    indices: Sequence[int] | np.ndarray | None = None,
) -> InvarianceSet:
    """Return the set for ``indices`` (default ``arange(key.n)``), generating only missing sources.

    generate: called once with the (K,) int64 missing source indices; must return an
        :class:`InvarianceSet` whose ``source_index`` equals them (same eps and grid as ``key``).
    The whole read-generate-write runs under a lock file, so concurrent callers do not duplicate
    work or lose each other's examples.
    """
    path = cache_path(cache_dir, key)
    want = np.arange(key.n) if indices is None else np.asarray(indices, np.int64).reshape(-1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(path.name + ".lock")):
        cached = load_set(path, key) if path.exists() else None
        todo = missing_indices(cached, want)
        if todo.size:
            log.info("invariance cache %s: generating %d of %d sources", path.name, todo.size, want.size)
            fresh = generate(todo)
            _check_fresh(fresh, todo, key)
            cached = fresh if cached is None else merge_sets(cached, fresh)
            save_set(path, cached, key)
    return select(cached, want)


def save_set(path: str | Path, inv: InvarianceSet, key: CacheKey) -> Path:
    """Write ``inv`` and the key's metadata to ``path`` atomically."""
    if not np.isclose(inv.eps, key.eps) or inv.grid != key.grid:
        raise ValueError(f"set (eps={inv.eps}, grid={inv.grid}) does not match key {key}")
    created = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    payload = {name: getattr(inv, name) for name in _ARRAYS}
    meta = dict(dataset=key.dataset, split=key.split, n=key.n, eps=float(key.eps), grid=key.grid,
                created=created, format=FORMAT_VERSION)
    payload.update({name: np.asarray(value) for name, value in meta.items()})

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **payload)

    return atomic_write(path, write)


def load_set(path: str | Path, key: CacheKey | None = None) -> InvarianceSet:
    """Read a cache file; when ``key`` is given, check that its metadata matches."""
    with np.load(path, allow_pickle=False) as data:
        meta = {name: data[name].item() for name in ("dataset", "split", "n", "eps", "grid", "format")}
        arrays = {name: data[name] for name in _ARRAYS}
    if meta["format"] != FORMAT_VERSION:
        raise ValueError(f"{path}: cache format {meta['format']}, expected {FORMAT_VERSION}")
    if key is not None:
        found = CacheKey(meta["dataset"], meta["eps"], meta["split"], int(meta["n"]), meta["grid"])
        if found != dataclasses.replace(key, eps=float(key.eps)):
            raise ValueError(f"{path}: holds {found}, not {key}")
    return InvarianceSet(eps=float(meta["eps"]), grid=str(meta["grid"]), **arrays)


def merge_sets(a: InvarianceSet, b: InvarianceSet) -> InvarianceSet:
    """Union of two sets with the same eps and grid, sorted by source index; ``b`` wins on overlap."""
    if not np.isclose(a.eps, b.eps) or a.grid != b.grid:
        raise ValueError("cannot merge invariance sets with different eps or grid")
    keep = ~np.isin(a.source_index, b.source_index)
    cols = {name: np.concatenate([getattr(a, name)[keep], getattr(b, name)]) for name in _ARRAYS}
    order = np.argsort(cols["source_index"], kind="stable")
    return InvarianceSet(eps=a.eps, grid=a.grid, **{k: v[order] for k, v in cols.items()})


def select(inv: InvarianceSet, indices: np.ndarray) -> InvarianceSet:
    """The rows of ``inv`` for the given source indices, in that order (KeyError if one is absent)."""
    position = {int(s): i for i, s in enumerate(inv.source_index)}
    try:
        rows = np.array([position[int(s)] for s in indices], dtype=np.int64)
    except KeyError as exc:
        raise KeyError(f"source index {exc.args[0]} is not in the set") from None
    return InvarianceSet(eps=inv.eps, grid=inv.grid, **{n: getattr(inv, n)[rows] for n in _ARRAYS})


def _check_fresh(fresh: InvarianceSet, todo: np.ndarray, key: CacheKey) -> None:
    """The generator must return exactly the requested sources with the key's eps and grid."""
    if not np.array_equal(np.sort(fresh.source_index), np.sort(todo)):
        raise ValueError("generate() returned other source indices than the missing ones")
    if not np.isclose(fresh.eps, key.eps) or fresh.grid != key.grid:
        raise ValueError(f"generate() returned eps={fresh.eps}, grid={fresh.grid}; key is {key}")
