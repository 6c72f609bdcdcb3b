"""Optimisers and learning-rate schedules (warm-up, then cosine / step / constant)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config.finetune import FinetuneConfig


def build_optimizer(cfg: FinetuneConfig, model: nn.Module, extra_groups: list[dict]) -> torch.optim.Optimizer:
    """SGD (momentum, nesterov) or AdamW over the model; no weight decay on biases and norms.
    ``extra_groups`` (e.g. learned ARMOR_D scalars) keep their own lr and get no weight decay."""
    decay, no_decay = [], []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (no_decay if param.ndim <= 1 else decay).append(param)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    groups += [dict(g, weight_decay=0.0) for g in extra_groups]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)


def lr_factor(step: int, total: int, schedule: str, warmup: int) -> float:
    """Multiplier of every group's base lr at optimiser step ``step`` (0-based) of ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return 0.1 ** sum(progress >= m for m in (0.5, 0.75))  # step: x0.1 at 50% and 75%


def build_scheduler(cfg: FinetuneConfig, optimizer: torch.optim.Optimizer, total: int):
    """A LambdaLR applying :func:`lr_factor` to all groups (ARMOR_D scalars included)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg.schedule, cfg.warmup))
