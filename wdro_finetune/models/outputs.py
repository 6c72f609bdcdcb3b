"""Checks, once per run and before anything is written, that a model's outputs can be scored: logits of
shape (N, K), K the data set's number of classes, all finite. Without them NaN logits score as class 0, a wrong row count broadcasts and a model with too few classes scores 0%, all
with exit 0."""

from __future__ import annotations

import torch
from torch import nn

from ..config import NUM_CLASSES
from ..errors import UserError

PROBE = 16  # images of the probe forward


@torch.no_grad()
def check_model_outputs(model: nn.Module, x: torch.Tensor, num_classes: int, device: str,
                        name: str) -> None:
    """One forward of the first ``PROBE`` images of x: (N, C, H, W) in [0, 1]; UserError naming what is wrong
    (the model fails on these images, its output is not (n, num_classes), or not finite). Labels are checked
    where data files are read (``data.datasets.check_arrays``)."""
    probe = x[:PROBE].to(device)
    try:
        out = model(probe)
    except Exception as exc:  # user code (plugins) or a wrong architecture: any error type is possible
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"model {name} fails on a batch of shape {tuple(probe.shape)}: {type(exc).__name__}"
                        + (f": {detail}" if detail else "")) from None
    if not isinstance(out, torch.Tensor):
        raise UserError(f"model {name} returns {type(out).__name__}, not a tensor of logits")
    if tuple(out.shape) != (len(probe), num_classes):
        raise UserError(f"model {name} returns outputs of shape {tuple(out.shape)} for {len(probe)} images; "
                        f"expected ({len(probe)}, {num_classes}) logits, one per class of the data set")
    bad = int((~torch.isfinite(out)).any(1).sum())
    if bad:
        raise UserError(f"model {name} returns NaN or infinite logits for {bad} of {len(probe)} images: its weights "
                        f"are broken")


def check_split(model: nn.Module, split, device: str, name: str) -> None:
    """:func:`check_model_outputs` on a ``DataSplit`` with its data set's number of classes."""
    check_model_outputs(model, split.x, NUM_CLASSES[split.dataset], device, name)


@torch.no_grad()
def predict(model: torch.nn.Module, x: torch.Tensor, device: str, batch_size: int) -> torch.Tensor:
    """Predicted labels (N,) on the CPU for x: (N, C, H, W) in [0, 1] (model in its current mode)."""
    preds = [model(x[i:i + batch_size].to(device)).argmax(1).cpu() for i in range(0, len(x), batch_size)]
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long)
