"""One entry point for every model source: :func:`load_model` and :func:`list_models`.

Sources: ``robustbench`` (the RobustBench zoo), ``builtin`` (small nets of this package, with
bundled weights), ``timm`` (``timm:<name>``), ``plugin`` (``package.module:factory`` or an entry
point of the ``wdro_finetune.models`` group). Every model takes [0,1] NCHW input and returns logits.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from torch import nn

from ..config import NUM_CLASSES, Dataset, ThreatModel
from ..errors import UserError
from ..registry import unknown_name_message
from ..utils.fileio import sha256_file
from . import plugins, robustbench_zoo, timm_models
from .builtin import BUILTIN_MODELS
from .checkpoint import load_state_into, load_weights_into, read_state_dict

log = logging.getLogger(__name__)

SOURCES = ("robustbench", "builtin", "timm", "plugin")
_IN_CHANNELS = {Dataset.MNIST: 1, Dataset.CIFAR10: 3, Dataset.CIFAR100: 3, Dataset.IMAGENET: 3}


DEFAULT_MODEL_DIR = "models"
RANDOM_INIT = "random-init"  # method label of an evaluation of initial (untrained) weights
PLUGIN_FACTORY = "plugin-factory"  # method label of a plugin evaluated with the weights its factory made


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for evaluation or training, with where its weights came from."""

    module: nn.Module
    name: str
    source: str
    weights_path: str | None  # file the weights were read from (None: random init or hub)
    weights_sha256: str | None
    origin: str | None = None  # checkpoint, model-dir, bundled, robustbench, timm-hub, factory or random-init


def infer_source(name: str) -> str:
    """Source of a model name when ``--source`` is not given."""
    if name.startswith(timm_models.PREFIX):
        return "timm"
    if plugins.is_factory_spec(name):
        return "plugin"
    if name in BUILTIN_MODELS:
        return "builtin"
    if name in plugins.plugin_names():
        return "plugin"
    return "robustbench"


def check_model_dir(name: str, source: str | None, dataset: Dataset, threat_model: ThreatModel,
                    model_dir: str | Path | None, checkpoint: str | Path | None) -> None:
    """UserError when a given ``model_dir`` other than the default ``models`` would silently not be used: for
    builtin, timm and plugin models without ``checkpoint`` it must hold
    ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` (else the bundled, hub or factory weights would be taken
    instead). RobustBench downloads into it, so it may be new. The default is searched and skipped if empty."""
    if model_dir in (None, DEFAULT_MODEL_DIR) or checkpoint or (source or infer_source(name)) == "robustbench":
        return
    layout_file = robustbench_zoo.checkpoint_path(model_dir, dataset, threat_model, name)
    if not layout_file.is_file():
        where = "does not exist" if not Path(model_dir).is_dir() else f"has no {layout_file}"
        raise UserError(f"--model-dir {model_dir} {where}; fix the path or drop --model-dir to use the "
                        f"model's own weights")


def load_model(name: str, dataset: Dataset, threat_model: ThreatModel, *, source: str | None = None,
               checkpoint: str | Path | None = None, model_dir: str | Path = "models",
               pretrained: bool = True, trust_checkpoint: bool = False, init_seed: int = 0) -> LoadedModel:
    """Build model ``name`` for ``dataset`` in eval mode, with weights from (first that applies):
    ``checkpoint``; ``<model_dir>/<dataset>/<threat_model>/<name>.pt`` (RobustBench layout);
    the source's own pretrained weights (RobustBench download, bundled builtin weights, timm hub; none with
    ``pretrained=False``). A builtin model without weights is initialised from ``init_seed``. The result's
    ``origin`` says which applied (``factory``: a plugin without weights, as its factory made it).
    """
    source = source or infer_source(name)
    if source not in SOURCES:
        raise UserError(unknown_name_message("model source", source, list(SOURCES)))
    layout_file = robustbench_zoo.checkpoint_path(model_dir, dataset, threat_model, name)
    if source == "robustbench":
        return _load_robustbench(name, dataset, threat_model, checkpoint, model_dir, layout_file, trust_checkpoint,
                                 pretrained)
    weights = Path(checkpoint) if checkpoint else (layout_file if layout_file.is_file() else None)
    origin = "checkpoint" if checkpoint else "model-dir" if weights else None
    module = _build(name, source, dataset, pretrained=pretrained and weights is None, init_seed=init_seed)
    if weights is None and source == "builtin" and pretrained:
        weights = _bundled_weights(name)
        origin = "bundled" if weights else RANDOM_INIT
    if weights is not None:
        state = read_state_dict(weights, trust=trust_checkpoint)
        load_state_into(_weights_target(module, source, state), state, weights)
    if origin is None:
        origin = {"timm": "timm-hub" if pretrained else RANDOM_INIT, "plugin": "factory"}.get(source, RANDOM_INIT)
    return LoadedModel(module.eval(), name, source, str(weights) if weights else None,
                       sha256_file(weights) if weights else None, origin)


def _load_robustbench(name, dataset, threat_model, checkpoint, model_dir, layout_file, trust,
                      pretrained=True) -> LoadedModel:
    if checkpoint is None and not pretrained:
        return LoadedModel(_zoo_architecture(name, dataset, threat_model).eval(), name, "robustbench", None, None,
                           RANDOM_INIT)
    module = robustbench_zoo.load_zoo_model(name, dataset, threat_model, model_dir) if checkpoint is None \
        else _zoo_architecture(name, dataset, threat_model)
    weights = Path(checkpoint) if checkpoint else layout_file
    if checkpoint is not None:
        load_weights_into(module, weights, trust=trust)
    sha = sha256_file(weights) if weights.is_file() else None
    return LoadedModel(module.eval(), name, "robustbench", str(weights) if sha else None, sha,
                       "checkpoint" if checkpoint else "robustbench")


def _weights_target(module: nn.Module, source: str, state: dict[str, torch.Tensor]) -> nn.Module:
    """The module a state dict belongs to: a timm checkpoint of the bare network (no ``1.`` keys of our
    normalisation wrapper) goes into the wrapped network."""
    if source == "timm" and isinstance(module, nn.Sequential) and not any(k.startswith("1.") for k in state):
        return module[1]
    return module


def _zoo_architecture(name: str, dataset: Dataset, threat_model: ThreatModel) -> nn.Module:
    robustbench_zoo.check_zoo_name(name, dataset, threat_model)
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel as RBThreat

    return model_dicts[BenchmarkDataset(dataset.value)][RBThreat(threat_model.value)][name]["model"]()


def _build(name: str, source: str, dataset: Dataset, pretrained: bool, init_seed: int = 0) -> nn.Module:
    num_classes = NUM_CLASSES[dataset]
    if source == "builtin":
        if name not in BUILTIN_MODELS:
            raise UserError(unknown_name_message("builtin model", name, list(BUILTIN_MODELS)))
        info = BUILTIN_MODELS[name]
        if info.dataset != dataset:
            raise UserError(f"builtin model {name} is for {info.dataset.value}, not {dataset.value}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(init_seed)  # a random initialisation is reproducible
            return info.factory()
    if source == "timm":
        return timm_models.create_timm_model(name, num_classes, _IN_CHANNELS[dataset], pretrained)
    return plugins.create_plugin_model(name, num_classes, dataset.value)


def _bundled_weights(name: str) -> Path | None:
    """Path of the bundled pretrained weights of a builtin model, or None (random init, warned)."""
    file_name = BUILTIN_MODELS[name].weights_file
    if file_name:
        path = Path(str(resources.files("wdro_finetune") / "assets" / "weights" / file_name))
        if path.is_file():
            return path
    log.warning("no bundled weights for %s: using a randomly initialised model", name)
    return None


@dataclass(frozen=True)
class ModelEntry:
    """One listed model name; dataset / threat model are None where the source does not fix them."""

    source: str
    name: str
    dataset: str | None = None
    threat_model: str | None = None


def list_models(source: str = "all", dataset: Dataset | None = None,
                threat_model: ThreatModel | None = None, pattern: str = "") -> list[ModelEntry]:
    """Known model names. RobustBench names are listed per dataset and threat model."""
    if source != "all" and source not in SOURCES:
        raise UserError(unknown_name_message("model source", source, list(SOURCES) + ["all"]))
    out: list[ModelEntry] = []
    if source in ("all", "builtin"):
        out += [ModelEntry("builtin", n, m.dataset.value) for n, m in BUILTIN_MODELS.items()
                if dataset in (None, m.dataset)]
    if source in ("all", "robustbench"):
        for ds in ([dataset] if dataset else robustbench_zoo.ZOO_DATASETS):
            for tm in ([threat_model] if threat_model else robustbench_zoo.ZOO_THREATS):
                out += [ModelEntry("robustbench", n, ds.value, tm.value) for n in robustbench_zoo.zoo_names(ds, tm)]
    if source in ("all", "timm"):
        out += [ModelEntry("timm", n) for n in timm_models.timm_names(pattern)]
    if source in ("all", "plugin"):
        out += [ModelEntry("plugin", n) for n in plugins.plugin_names()]
    return out
