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
    """Fill a bool array of length ``n`` with ``compute(start, stop)`` chunk by chunk.

    ``state_path`` (optional) holds ``done`` (per chunk) and ``flags``; it is reused when its shape
    matches, and removed once every chunk is done.
    """
    n_chunks = -(-n // chunk)
    flags, done = _load_state(state_path, n, n_chunks)
    if done.any():
        log.info("%s: resuming, %d of %d chunks already done", desc, int(done.sum()), n_chunks)
    with progress_bar(n, desc, progress, unit="img", leave=False) as bar:
        bar.update(int(done.sum()) and min(n, int(done.sum()) * chunk))
        for i in range(n_chunks):
            if done[i]:
                continue
            start, stop = i * chunk, min(n, (i + 1) * chunk)
            flags[start:stop] = compute(start, stop)
            done[i] = True
            if state_path is not None:
                _save_state(state_path, flags, done)
            bar.update(stop - start)
    return flags


def _load_state(path: Path | None, n: int, n_chunks: int) -> tuple[np.ndarray, np.ndarray]:
    if path is not None and path.is_file():
        try:
            with np.load(path) as data:
                flags, done = data["flags"].astype(bool), data["done"].astype(bool)
            if flags.shape == (n,) and done.shape == (n_chunks,):
                return flags, done
        except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile):
            log.warning("ignoring unreadable partial state %s", path)
    return np.zeros(n, dtype=bool), np.zeros(n_chunks, dtype=bool)


def _save_state(path: Path, flags: np.ndarray, done: np.ndarray) -> None:
    buffer = io.BytesIO()
    np.savez(buffer, flags=flags, done=done)
    atomic_write_bytes(path, buffer.getvalue())
