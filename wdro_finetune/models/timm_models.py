"""timm models as ``timm:<name>``, wrapped so they take [0,1] inputs (normalisation inside)."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import Dataset, ThreatModel
from ..errors import UserError
from ..registry import unknown_name_message
from .builtin import Normalize
from .source import IN_CHANNELS, MODEL_SOURCES, RANDOM_INIT, LoadRequest, ModelEntry, ModelSource

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


class TimmSource(ModelSource):
    """``timm:<name>``: the architecture from timm, its pretrained weights from the hub (online only)."""

    name = "timm"
    claim_order = 0

    def claims(self, model_name: str) -> bool:
        return model_name.startswith(PREFIX)

    def names(self, dataset: Dataset | None, threat_model: ThreatModel | None, pattern: str) -> list[ModelEntry]:
        return [ModelEntry(self.name, n) for n in timm_names(pattern)]

    def build(self, request: LoadRequest, num_classes: int, pretrained: bool) -> nn.Module:
        return create_timm_model(request.name, num_classes, IN_CHANNELS[request.dataset], pretrained)

    def own_weights(self, request: LoadRequest) -> tuple[Path | None, str]:
        return None, "timm-hub" if request.pretrained else RANDOM_INIT

    def weights_target(self, module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        """A checkpoint of the bare network (no ``1.`` keys of the normalisation wrapper) goes into it."""
        if isinstance(module, nn.Sequential) and not any(k.startswith("1.") for k in state):
            return module[1]
        return module


MODEL_SOURCES.add(TimmSource.name, TimmSource())
