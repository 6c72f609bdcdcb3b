"""User models: ``package.module:factory`` strings and the ``wdro_finetune.models`` entry points.

Contract: a factory is a callable returning an ``nn.Module`` that takes x: (N, C, H, W) float32
in [0, 1] and returns logits (N, num_classes). If the factory accepts keyword arguments
``num_classes`` and/or ``dataset`` they are passed. A model may define ``features(x)`` returning
penultimate features (otherwise the input of its last ``nn.Linear`` is used).

Only explicitly named modules or installed entry points are imported. A named ``module:factory`` is looked up
as ``python -m`` would (the current folder first, for that import only); nothing else ever is imported from the
current folder.
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import sys
from importlib.metadata import entry_points
from typing import Any, Callable

from pathlib import Path

from torch import nn

from ..config import Dataset, ThreatModel
from ..errors import UserError
from ..registry import unknown_name_message
from .source import MODEL_SOURCES, LoadRequest, ModelEntry, ModelSource

ENTRY_POINT_GROUP = "wdro_finetune.models"
_SPEC = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def is_factory_spec(name: str) -> bool:
    """True for strings like ``mypkg.nets:build``."""
    return bool(_SPEC.match(name))


def plugin_names() -> list[str]:
    """Names of installed entry points in the ``wdro_finetune.models`` group."""
    return sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))


def resolve_factory(name: str) -> Callable[..., nn.Module]:
    """The factory for ``module:attr`` (imported as ``python -m`` would: the current folder first on the path,
    only for this import) or an installed entry-point name."""
    if is_factory_spec(name):
        module_name, attr = name.split(":")
        module = _user_code(f"cannot import plugin module {module_name!r}", lambda: _import_here(module_name))
        factory = getattr(module, attr, None)
        if not callable(factory):
            raise UserError(f"plugin module {module_name!r} has no callable {attr!r}")
        return factory
    eps = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    if name not in eps:
        raise UserError(unknown_name_message("plugin model", name, list(eps)) +
                        " (use package.module:factory or install an entry point)")
    return _user_code(f"cannot load plugin entry point {name!r}", eps[name].load)


def _import_here(module_name: str):
    """Import ``module_name`` with the current folder first on ``sys.path`` for this one import."""
    here = os.getcwd()
    sys.path.insert(0, here)
    try:
        return importlib.import_module(module_name)
    finally:
        if sys.path and sys.path[0] == here:
            del sys.path[0]


def _user_code(what: str, call: Callable[[], Any]) -> Any:
    """``call()``; any exception of the user's code becomes one UserError line starting with ``what``."""
    try:
        return call()
    except UserError:
        raise
    except Exception as exc:  # user code may raise anything (ImportError, SyntaxError, RuntimeError, ...)
        detail = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
        raise UserError(f"{what}: {type(exc).__name__}" + (f": {detail}" if detail else "")) from None


def create_plugin_model(name: str, num_classes: int, dataset: str) -> nn.Module:
    """Call the factory with the keyword arguments it accepts (``num_classes``, ``dataset``); UserError if it
    needs other arguments, raises, or returns something that is not an ``nn.Module``."""
    factory = resolve_factory(name)
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    accepts_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    kwargs = {k: v for k, v in (("num_classes", num_classes), ("dataset", dataset)) if accepts_any or k in params}
    needed = [p.name for p in params.values() if p.default is p.empty and p.name not in kwargs
              and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if needed:
        raise UserError(f"plugin factory {name!r} needs argument(s) {', '.join(needed)}; it is called with "
                        f"num_classes and dataset only")
    model = _user_code(f"plugin factory {name!r} failed", lambda: factory(**kwargs))
    if not isinstance(model, nn.Module):
        raise UserError(f"plugin factory {name!r} returned {type(model).__name__}, not a torch nn.Module")
    return model


class PluginSource(ModelSource):
    """A user's model: ``package.module:factory`` or an installed entry point; the factory makes the weights."""

    name = "plugin"
    claim_order = 2

    def claims(self, model_name: str) -> bool:
        return is_factory_spec(model_name) or model_name in plugin_names()

    def names(self, dataset: Dataset | None, threat_model: ThreatModel | None, pattern: str) -> list[ModelEntry]:
        return [ModelEntry(self.name, n) for n in plugin_names()]

    def build(self, request: LoadRequest, num_classes: int, pretrained: bool) -> nn.Module:
        return create_plugin_model(request.name, num_classes, request.dataset.value)

    def own_weights(self, request: LoadRequest) -> tuple[Path | None, str]:
        return None, "factory"


MODEL_SOURCES.add(PluginSource.name, PluginSource())
