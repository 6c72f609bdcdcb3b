"""Weight files: read ``.safetensors`` or ``.pt`` safely, unwrap common layouts, write atomically."""

from __future__ import annotations

import io
import json
import pickle
import warnings
from pathlib import Path
from typing import Mapping

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load_bytes
from safetensors.torch import save as st_save_bytes
from torch import nn

from ..errors import UserError
from ..utils.fileio import atomic_write_bytes

_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")


def read_state_dict(path: str | Path, *, trust: bool = False) -> dict[str, torch.Tensor]:
    """Tensors of a weight file, unwrapped and without a leading ``module.`` prefix.

    ``.pt`` files are read with ``torch.load(weights_only=True)``: a pickle that would run code is
    refused (UserError) unless ``trust=True``.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {path} does not exist")
    raw = _load_raw(path, trust)
    return strip_leading_prefix(unwrap_state_dict(raw, path), "module.")


def _load_raw(path: Path, trust: bool) -> object:
    data = path.read_bytes()
    if path.suffix == ".safetensors":
        try:
            return st_load_bytes(data)
        except (SafetensorError, ValueError, RuntimeError) as exc:
            raise UserError(f"checkpoint {path} is not a valid safetensors file ({exc})") from None
    try:
        with warnings.catch_warnings():  # torch warns (2 lines on stderr) about the protocol of odd files
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as exc:
        if not trust and "weights_only" in str(exc):
            what = "contains pickled objects that could run code" if "GLOBAL" in str(exc) else \
                "is corrupt, or holds pickled data beyond plain tensors that could run code"
            raise UserError(f"checkpoint {path} {what}; refusing to load it (re-save it as safetensors, "
                            f"or pass --trust-checkpoint if you trust its author)") from None
        raise UserError(f"checkpoint {path} is corrupt or not a torch file") from None
    except Exception as exc:  # torch.load on arbitrary bytes raises arbitrary types (IndexError, KeyError, ...)
        raise UserError(f"checkpoint {path} is corrupt or not a torch file ({type(exc).__name__})") from None


def unwrap_state_dict(raw: object, path: Path | str = "checkpoint") -> dict[str, torch.Tensor]:
    """Descend through ``state_dict`` / ``model_state_dict`` / ``model`` wrapper keys."""
    for _ in range(3):
        if isinstance(raw, Mapping) and not _is_tensor_dict(raw):
            key = next((k for k in _WRAPPER_KEYS if k in raw), None)
            if key is None:
                break
            raw = raw[key]
    if isinstance(raw, nn.Module):
        raw = raw.state_dict()
    if not isinstance(raw, Mapping) or not _is_tensor_dict(raw):
        raise UserError(f"checkpoint {path} holds no state dict of tensors")
    return dict(raw)


def _is_tensor_dict(obj: Mapping) -> bool:
    return len(obj) > 0 and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def strip_leading_prefix(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """Remove ``prefix`` where a key STARTS with it (RobustBench strips it anywhere: a bug)."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def load_weights_into(model: nn.Module, path: str | Path, *, trust: bool = False) -> nn.Module:
    """Load a weight file into ``model`` strictly; a mismatch is a one-line UserError."""
    return load_state_into(model, read_state_dict(path, trust=trust), path)


def load_state_into(model: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path) -> nn.Module:
    """Load tensors read from ``path`` into ``model`` strictly; a mismatch is a one-line UserError.

    Keys and shapes are checked before anything is copied: on a mismatch ``model`` is left unchanged
    (``load_state_dict`` alone copies the matching tensors before it raises).
    """
    missing, unexpected = _key_mismatch(model, state)
    if missing or unexpected:
        raise UserError(f"checkpoint {path} does not match the model: missing {missing[:3]}, "
                        f"unexpected {unexpected[:3]}")
    own = model.state_dict()
    wrong = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if wrong:
        k = wrong[0]
        raise UserError(f"checkpoint {path} does not match the model: {len(wrong)} tensor(s) of another shape, "
                        f"e.g. {k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the model")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise UserError(f"checkpoint {path} does not match the model: {str(exc).splitlines()[-1].strip()}") from None
    return model


def _key_mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> tuple[list[str], list[str]]:
    expected = set(model.state_dict())
    return sorted(expected - set(state)), sorted(set(state) - expected)


def save_safetensors(model_or_state: nn.Module | Mapping[str, torch.Tensor], path: str | Path,
                     metadata: Mapping[str, str] | None = None) -> Path:
    """Atomically write weights as safetensors (contiguous CPU copies)."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else model_or_state
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in state.items()}
    return atomic_write_bytes(path, _sorted_metadata(st_save_bytes(tensors, metadata=dict(metadata or {}))))


def _sorted_metadata(data: bytes) -> bytes:
    """safetensors writes ``__metadata__`` in hash order, which differs from process to process: sort it,
    so the same weights always give the same bytes (and the same sha256 in records and record ids)."""
    size = int.from_bytes(data[:8], "little")
    header = json.loads(data[8:8 + size])
    if len(header.get("__metadata__") or {}) < 2:
        return data
    header["__metadata__"] = dict(sorted(header["__metadata__"].items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    if len(text) > size:  # cannot happen (same content, another order); keep the library's bytes
        return data
    return data[:8] + text + b" " * (size - len(text)) + data[8 + size:]


def save_robustbench_layout(model: nn.Module, model_dir: str | Path, dataset: str, threat_model: str,
                            name: str) -> Path:
    """Write ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` as ``{'state_dict': tensors}``
    (plain tensors, loadable with ``weights_only=True`` and by ``robustbench.utils.load_model``)."""
    path = Path(model_dir) / dataset / threat_model / f"{name}.pt"
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    buffer = io.BytesIO()
    torch.save({"state_dict": state}, buffer)
    return atomic_write_bytes(path, buffer.getvalue())
