"""Penultimate features h(x) without an extra forward pass (METHODS.md section 5).

``FeatureHook`` registers a forward pre-hook on the classifier layer (by default the LAST ``nn.Linear`` in
``model.modules()`` order, i.e. registration order) and records that layer's input, flattened to (N, D), on
every forward call made while the hook is attached. The recorded tensors keep their autograd graph, so a
regulariser on them back-propagates into the network:

    with FeatureHook(model) as hook:
        logits_clean = model(x)                 # the base method's own forwards
        with hook.paused():                     # attack iterations: do not record
            x_adv = attack(model, x, y)
        logits_adv = model(x_adv)
    h_clean, h_adv = hook.pop()                 # (N, D) each, in call order

A model whose class defines a ``features(x)`` METHOD (the plugin contract: ``forward(x)`` computes
``head(self.features(x))``) is recorded at that method's output instead; a ``features`` attribute that is
an ``nn.Module`` (torchvision VGG's trunk) is not a penultimate feature and is ignored.

Caveats: "last registered Linear" is the classifier for ResNet/WideResNet/PreAct/ViT-style models but not for
a model that registers its head before other Linear layers, or whose head is a 1x1 convolution: pass
``layer=`` explicitly then. Works under DistributedDataParallel (the hook sits on the wrapped module); not
with ``nn.DataParallel``, whose replica threads would record in a nondeterministic order.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

__all__ = ["FeatureHook", "last_linear", "extract_features", "has_features_method"]


class FeatureHook:
    """Record the input of ``layer`` (default: ``last_linear(model)``) on each forward call while attached.

    Use as a context manager (attach on enter, detach on exit; captures stay available after exit) or call
    ``attach()`` / ``remove()``. ``pop()`` returns the captured (N, D) tensors in call order and forgets them.
    Captured tensors hold their graph until popped: pop every step, and pause the hook around forwards you do
    not need (e.g. attack iterations).
    """

    def __init__(self, model: nn.Module, layer: nn.Module | None = None, training_only: bool = False):
        self.model = model
        self.method = layer is None and has_features_method(model)
        self.layer = layer if layer is not None or self.method else last_linear(model)
        self.training_only = training_only  # skip forwards made in eval mode (e.g. attack iterations)
        self._captured: list[torch.Tensor] = []
        self._handle = None
        self._paused = False

    def attach(self) -> "FeatureHook":
        """Start recording (no-op if already attached)."""
        if self._handle is None and self.method:
            original = type(self.model).features.__get__(self.model)

            def recorded(*args, **kwargs):
                h = original(*args, **kwargs)
                if not self._paused and (self.model.training or not self.training_only):
                    self._captured.append(h.reshape(h.shape[0], -1))
                return h

            self.model.features = recorded  # an instance attribute shadows the method until remove()
            self._handle = recorded
        elif self._handle is None:
            self._handle = self.layer.register_forward_pre_hook(self._record, with_kwargs=True)
        return self

    def remove(self) -> None:
        """Stop recording; captured tensors are kept until ``pop()``."""
        if self._handle is not None and self.method:
            del self.model.features
            self._handle = None
        elif self._handle is not None:
            self._handle.remove()
            self._handle = None

    @property
    def attached(self) -> bool:
        return self._handle is not None

    def pop(self) -> list[torch.Tensor]:
        """Captured features, one (N, D) tensor per forward call in call order; the buffer is emptied."""
        captured, self._captured = self._captured, []
        return captured

    @contextmanager
    def paused(self) -> Iterator["FeatureHook"]:
        """Forwards inside this block are not recorded."""
        previous, self._paused = self._paused, True
        try:
            yield self
        finally:
            self._paused = previous

    def __enter__(self) -> "FeatureHook":
        return self.attach()

    def __exit__(self, *exc_info) -> None:
        self.remove()

    def _record(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._paused or (self.training_only and not module.training):
            return None
        x = args[0] if args else kwargs["input"]
        self._captured.append(x.reshape(x.shape[0], -1))
        return None


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` in ``model.modules()`` order; ValueError if the model has none."""
    found = None
    for module in model.modules():
        if isinstance(module, nn.Linear):
            found = module
    if found is None:
        raise ValueError(
            f"{type(model).__name__} has no nn.Linear layer to hook; pass FeatureHook(model, layer=...) "
            "with the classifier module whose input is the penultimate feature"
        )
    return found


def has_features_method(model: nn.Module) -> bool:
    """True when the model's class defines a ``features(x)`` method (not an ``nn.Module`` named features)."""
    method = getattr(type(model), "features", None)
    return callable(method) and not isinstance(method, nn.Module) and \
        not isinstance(model._modules.get("features"), nn.Module)


def extract_features(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """h(x): (N, D) for standalone use (evaluation, analysis). COSTS ONE FORWARD PASS.

    Uses the model's own ``features(x)`` METHOD if it defines one (an ``nn.Module`` attribute named
    ``features``, like torchvision VGG's convolutional trunk, is not a penultimate feature and is ignored);
    otherwise runs ``model(x)`` under a FeatureHook. In training, prefer FeatureHook on the forwards you make.
    """
    if has_features_method(model):
        h = model.features(x)
        return h.reshape(h.shape[0], -1)
    with FeatureHook(model) as hook:
        model(x)
    return hook.pop()[0]
