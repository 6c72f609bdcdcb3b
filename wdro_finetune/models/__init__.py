"""One entry point for every model source: :func:`load_model` and :func:`list_models`.

Sources (:data:`~wdro_finetune.models.source.MODEL_SOURCES`): ``robustbench`` (the RobustBench zoo),
``builtin`` (small nets of this package, with bundled weights), ``timm`` (``timm:<name>``), ``plugin``
(``package.module:factory`` or an entry point of the ``wdro_finetune.models`` group). Every model takes
[0,1] NCHW input and returns logits.
"""

from __future__ import annotations

from pathlib import Path

from ..config import Dataset, ThreatModel
from ..errors import UserError
from . import builtin, plugins, robustbench_zoo, timm_models  # noqa: F401  (register the sources)
from .source import (DEFAULT_MODEL_DIR, MODEL_SOURCES, PLUGIN_FACTORY, RANDOM_INIT, LoadedModel,  # noqa: F401
                     LoadRequest, ModelEntry, checkpoint_path)

SOURCES = tuple(sorted(MODEL_SOURCES.names(), key=lambda n: MODEL_SOURCES.get(n).claim_order))


def infer_source(name: str) -> str:
    """Source of a model name when ``--source`` is not given: the first source (by claim order) claiming it."""
    return next(s for s in SOURCES if MODEL_SOURCES.get(s).claims(name))


def check_model_dir(name: str, source: str | None, dataset: Dataset, threat_model: ThreatModel,
                    model_dir: str | Path | None, checkpoint: str | Path | None) -> None:
    """UserError when a given ``model_dir`` other than the default ``models`` would silently not be used: for
    sources that do not download into it (builtin, timm, plugin) and without ``checkpoint`` it must hold
    ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` (else the bundled, hub or factory weights would be taken
    instead). RobustBench downloads into it, so it may be new. The default is searched and skipped if empty."""
    if model_dir in (None, DEFAULT_MODEL_DIR) or checkpoint or \
            MODEL_SOURCES.get(source or infer_source(name)).downloads_into_model_dir:
        return
    layout_file = checkpoint_path(model_dir, dataset, threat_model, name)
    if not layout_file.is_file():
        where = "does not exist" if not Path(model_dir).is_dir() else f"has no {layout_file}"
        raise UserError(f"--model-dir {model_dir} {where}; fix the path or drop --model-dir to use the "
                        f"model's own weights")


def load_model(name: str, dataset: Dataset, threat_model: ThreatModel, *, source: str | None = None,
               checkpoint: str | Path | None = None, model_dir: str | Path = DEFAULT_MODEL_DIR,
               pretrained: bool = True, trust_checkpoint: bool = False, init_seed: int = 0) -> LoadedModel:
    """Build model ``name`` for ``dataset`` in eval mode, with weights from (first that applies):
    ``checkpoint``; ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` (RobustBench layout);
    the source's own pretrained weights (RobustBench download, bundled builtin weights, timm hub; none with
    ``pretrained=False``). A builtin model without weights is initialised from ``init_seed``. The result's
    ``origin`` says which applied (``factory``: a plugin without weights, as its factory made it).
    """
    entry = MODEL_SOURCES.get(source or infer_source(name))
    request = LoadRequest(name, dataset, threat_model, Path(checkpoint) if checkpoint else None, Path(model_dir),
                          pretrained, trust_checkpoint, init_seed)
    return entry.load(request)


def list_models(source: str = "all", dataset: Dataset | None = None,
                threat_model: ThreatModel | None = None, pattern: str = "") -> list[ModelEntry]:
    """Known model names, source by source in the order builtin, robustbench, timm, plugin (RobustBench names
    are listed per dataset and threat model)."""
    names = LISTING_ORDER if source == "all" else (MODEL_SOURCES.get(source).name,)
    return [entry for s in names for entry in MODEL_SOURCES.get(s).names(dataset, threat_model, pattern)]


LISTING_ORDER = ("builtin", "robustbench", "timm", "plugin")
