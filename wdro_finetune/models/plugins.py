"""User models: ``package.module:factory`` strings and the ``wdro_finetune.models`` entry points.

Contract: a factory is a callable returning an ``nn.Module`` that takes x: (N, C, H, W) float32
in [0, 1] and returns logits (N, num_classes). If the factory accepts keyword arguments
``num_classes`` and/or ``dataset`` they are passed. A model may define ``features(x)`` returning
penultimate features (otherwise the input of its last ``nn.Linear`` is used).

Only explicitly named modules or installed entry points are imported: never the current folder.
"""

from __future__ import annotations

import importlib
import inspect
import re
from importlib.metadata import entry_points
from typing import Callable

from torch import nn

from ..errors import UserError
from ..registry import unknown_name_message

ENTRY_POINT_GROUP = "wdro_finetune.models"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_factory_spec(name: str) -> bool:
    """True for strings like ``mypkg.nets:build``."""
    return bool(_SPEC.match(name))


def plugin_names() -> list[str]:
    """Names of installed entry points in the ``wdro_finetune.models`` group."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """The factory for ``module:attr`` or an installed entry-point name."""
    if is_factory_spec(name):
        module_name, attr = name.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise UserError(f"cannot import plugin module {module_name!r}: {exc}") from None
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise UserError(f"plugin module {module_name!r} has no callable {attr!r}")
        return factory
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        raise UserError(unknown_name_message("plugin model", name, list(eps)) +
                        " (use package.module:factory or install an entry point)")
    return eps[name].load()


def create_plugin_model(name: str, num_classes: int, dataset: str) -> nn.Module:
    """Call the factory with the keyword arguments it accepts; check it returned an nn.Module."""
    factory = resolve_factory(name)
    params = inspect.signature(factory).parameters
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in (("num_classes", num_classes), ("dataset", dataset)) if accepts_any or k in params}
    model = factory(**kwargs)
    if not isinstance(model, nn.Module):
        raise UserError(f"plugin factory {name!r} returned {type(model).__name__}, not a torch nn.Module")
    return model
