"""Training checkpoints: written atomically (temp file + fsync + rename), the newest named in
``checkpoints/latest``; loaded with ``torch.load(weights_only=True)`` (tensors and plain values only)."""

from __future__ import annotations

import io
import logging
import pickle
import warnings
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
    for stale in folder.glob(".step_*.pt.*.tmp"):  # left by a process killed while writing (one writer per run)
        stale.unlink(missing_ok=True)
    return path


def discard_checkpoint(out: str | Path, step: int) -> Path | None:
    """Delete ``checkpoints/step_<step>.pt`` if it exists and point ``latest`` at the newest remaining
    checkpoint, which is returned (None if none is left). For a checkpoint whose weights gave a
    non-finite loss: resuming from it would fail again whatever the learning rate."""
    folder = checkpoint_dir(out)
    (folder / f"step_{step:08d}.pt").unlink(missing_ok=True)
    remaining = sorted(folder.glob("step_*.pt"))
    if remaining:
        atomic_write_text(folder / LATEST, remaining[-1].name + "\n")
        return remaining[-1]
    (folder / LATEST).unlink(missing_ok=True)
    return None


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
    problems = []
    for path in candidates:
        try:
            with warnings.catch_warnings():  # torch warns about the pickle protocol of odd files
                warnings.filterwarnings("ignore", message="Detected pickle protocol")
                return torch.load(path, map_location="cpu", weights_only=True), path
        except pickle.UnpicklingError as exc:
            problem = "pickled objects that could run code, refused" if "GLOBAL" in str(exc) else \
                "corrupt or not weights-only, refused"
        except Exception as exc:  # torch.load on damaged bytes raises many types (OSError, RuntimeError, KeyError...)
            problem = type(exc).__name__
        log.warning("checkpoint %s unreadable (%s); trying an older one", path, problem)
        problems.append(f"{path.name}: {problem}")
    if candidates:
        raise UserError(f"no readable checkpoint in {folder} ({'; '.join(problems)})")
    return None
