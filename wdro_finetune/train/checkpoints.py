"""Training checkpoints: written atomically (temp file + fsync + rename), the newest named in
``checkpoints/latest``; loaded with ``torch.load(weights_only=True)`` (tensors and plain values only)."""

from __future__ import annotations

import io
import logging
import pickle
from pathlib import Path

import torch

from ..errors import UserError
from ..utils.fileio import atomic_write_bytes, atomic_write_text

log = logging.getLogger(__name__)

LATEST = "latest"


def checkpoint_dir(out: str | Path) -> Path:
    return Path(out) / "checkpoints"


def save_checkpoint(out: str | Path, state: dict, step: int, keep: int = 2) -> Path:
    """Write ``checkpoints/step_<step>.pt`` atomically, point ``latest`` at it, keep the newest ``keep``."""
    folder = checkpoint_dir(out)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = atomic_write_bytes(folder / f"step_{step:08d}.pt", buffer.getvalue())
    atomic_write_text(folder / LATEST, path.name + "\n")
    for old in sorted(folder.glob("step_*.pt"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def load_latest_checkpoint(out: str | Path) -> tuple[dict, Path] | None:
    """The newest readable checkpoint (falls back to older files if the newest is unreadable)."""
    folder = checkpoint_dir(out)
    if not folder.is_dir():
        return None
    named = folder / LATEST
    candidates = sorted(folder.glob("step_*.pt"), reverse=True)
    if named.is_file():
        first = folder / named.read_text().strip()
        candidates = [first] + [c for c in candidates if c != first]
    for path in candidates:
        try:
            return torch.load(path, map_location="cpu", weights_only=True), path
        except (OSError, RuntimeError, EOFError, pickle.UnpicklingError) as exc:
            log.warning("checkpoint %s unreadable (%s); trying an older one", path, type(exc).__name__)
    if candidates:
        raise UserError(f"no readable checkpoint in {folder}")
    return None
