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
