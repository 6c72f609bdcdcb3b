"""Run a model in eval mode for the duration of an attack, then restore every module's own mode."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from torch import nn


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and all submodules) in eval mode; on exit restore each module's flag.

    Flags are restored per module, so a model whose parts were deliberately in different modes
    (e.g. frozen batch-norm inside a training model) comes back exactly as it was.
    """
    saved = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in saved:
            module.training = training


@contextmanager
def frozen_parameters(model: nn.Module) -> Iterator[nn.Module]:
    """Turn off ``requires_grad`` on every parameter for the duration (restored on exit): third-party
    attacks that call ``.backward()`` then neither touch parameter ``.grad`` fields nor pay for them."""
    saved = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in saved:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, flag in saved:
            p.requires_grad_(flag)
