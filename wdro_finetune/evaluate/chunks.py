"""Resumable per-chunk evaluation: results of finished chunks are saved atomically after each
chunk, so a killed evaluation recomputes only the chunks that had not finished."""

from __future__ import annotations

import io
import logging
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ..utils.fileio import atomic_write_bytes
from ..utils.progress import progress_bar

log = logging.getLogger(__name__)


def run_chunked(n: int, chunk: int, compute: Callable[[int, int], np.ndarray], state_path: Path | None,
                desc: str, progress: bool = False) -> np.ndarray:
    """Fill a bool array of length ``n`` with ``compute(start, stop)`` chunk by chunk (see
    :func:`run_chunked_arrays`)."""
    fields = {"flags": np.dtype(bool)}
    return run_chunked_arrays(n, chunk, lambda a, b: {"flags": compute(a, b)}, fields, state_path, desc,
                              progress)["flags"]


def run_chunked_arrays(n: int, chunk: int, compute: Callable[[int, int], dict[str, np.ndarray]],
                       fields: dict[str, np.dtype], state_path: Path | None, desc: str,
                       progress: bool = False) -> dict[str, np.ndarray]:
    """Fill one array of length ``n`` per entry of ``fields`` (name -> dtype) with ``compute(start, stop)``
    (a dict of arrays of length stop - start) chunk by chunk.

    ``state_path`` (optional) holds ``done`` (per chunk) and the arrays; it is reused when its shapes and
    dtypes match, and is left for the caller to remove once the result is recorded.
    """
    n_chunks = -(-n // chunk)
    arrays, done = _load_state(state_path, n, n_chunks, fields)
    if done.any():
        log.info("%s: resuming, %d of %d chunks already done", desc, int(done.sum()), n_chunks)
    with progress_bar(n, desc, progress, unit="img", leave=False) as bar:
        bar.update(int(done.sum()) and min(n, int(done.sum()) * chunk))
        for i in range(n_chunks):
            if done[i]:
                continue
            start, stop = i * chunk, min(n, (i + 1) * chunk)
            for name, values in compute(start, stop).items():
                arrays[name][start:stop] = values
            done[i] = True
            if state_path is not None:
                _save_state(state_path, arrays, done)
            bar.update(stop - start)
    return arrays


def _load_state(path: Path | None, n: int, n_chunks: int,
                fields: dict[str, np.dtype]) -> tuple[dict[str, np.ndarray], np.ndarray]:
    if path is not None and path.is_file():
        try:
            with np.load(path) as data:
                arrays = {name: data[name] for name in fields}
                done = data["done"].astype(bool)
            if done.shape == (n_chunks,) and all(a.shape == (n,) and a.dtype == fields[k] for k, a in arrays.items()):
                return arrays, done
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            log.warning("ignoring unreadable partial state %s", path)
    return {name: np.zeros(n, dtype=dtype) for name, dtype in fields.items()}, np.zeros(n_chunks, dtype=bool)


def _save_state(path: Path, arrays: dict[str, np.ndarray], done: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, done=done, **arrays)
    atomic_write_bytes(path, buffer.getvalue())
