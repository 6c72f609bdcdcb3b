"""timm models as ``timm:<name>``, wrapped so they take [0,1] inputs (normalisation inside)."""

from __future__ import annotations

from torch import nn

from ..errors import UserError
from ..registry import unknown_name_message
from .builtin import Normalize

PREFIX = "timm:"


def timm_names(pattern: str = "") -> list[str]:
    """timm architecture names (``timm:`` prefixed), optionally filtered by a wildcard pattern."""
    import timm

    return [PREFIX + n for n in timm.list_models(pattern or "*")]


def create_timm_model(name: str, num_classes: int, in_chans: int, pretrained: bool) -> nn.Module:
    """``Normalize(mean, std) -> timm model``; ``pretrained`` downloads from the hub (online only)."""
    import timm

    arch = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not timm.is_model(arch):
        raise UserError(unknown_name_message("timm model", arch, timm.list_models()))
    try:
        net = timm.create_model(arch, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans)
    except Exception as exc:  # hub download failures and bad arguments
        raise UserError(f"cannot create timm model {arch} (pretrained={pretrained}): {type(exc).__name__}; "
                        f"offline, pass --checkpoint FILE instead of downloading") from None
    cfg = getattr(net, "pretrained_cfg", {}) or {}
    mean = tuple(cfg.get("mean", (0.485, 0.456, 0.406)))
    std = tuple(cfg.get("std", (0.229, 0.224, 0.225)))
    if len(mean) != in_chans:
        mean, std = (sum(mean) / len(mean),) * in_chans, (sum(std) / len(std),) * in_chans
    return nn.Sequential(Normalize(mean, std), net)
