"""The model-source contract and its registry. A source (robustbench, builtin, timm, plugin) says which names
it claims, lists its names, builds an architecture and knows its own weights; loading (checkpoint, then a
RobustBench-layout file in ``model_dir``, then the source's own weights) is written once, here. Adding a
source is one module with one :class:`ModelSource` subclass registered in :data:`MODEL_SOURCES`."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn

from ..config import NUM_CLASSES, Dataset, ThreatModel
from ..registry import Registry
from ..utils.fileio import sha256_file
from .checkpoint import load_state_into, read_state_dict

DEFAULT_MODEL_DIR = "models"
RANDOM_INIT = "random-init"  # method label (and origin) of initial, untrained weights
PLUGIN_FACTORY = "plugin-factory"  # method label of a plugin evaluated with the weights its factory made
IN_CHANNELS = {Dataset.MNIST: 1, Dataset.CIFAR10: 3, Dataset.CIFAR100: 3, Dataset.IMAGENET: 3}


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for evaluation or training, with where its weights came from."""

    module: nn.Module
    name: str
    source: str
    weights_path: str | None  # file the weights were read from (None: random init or hub)
    weights_sha256: str | None
    origin: str | None = None  # checkpoint, model-dir, bundled, robustbench, timm-hub, factory or random-init


@dataclass(frozen=True)
class ModelEntry:
    """One listed model name; dataset / threat model are None where the source does not fix them."""

    source: str
    name: str
    dataset: str | None = None
    threat_model: str | None = None


@dataclass(frozen=True)
class LoadRequest:
    """What :func:`wdro_finetune.models.load_model` was asked for (weights from the first that applies:
    ``checkpoint``, the RobustBench-layout file in ``model_dir``, the source's own)."""

    name: str
    dataset: Dataset
    threat_model: ThreatModel
    checkpoint: Path | None
    model_dir: Path
    pretrained: bool
    trust_checkpoint: bool
    init_seed: int

    @property
    def layout_file(self) -> Path:
        return checkpoint_path(self.model_dir, self.dataset, self.threat_model, self.name)


def checkpoint_path(model_dir: str | Path, dataset: Dataset, threat_model: ThreatModel, name: str) -> Path:
    """Where the RobustBench layout keeps a model's weights: ``<model_dir>/<dataset>/<threat_model>/<name>.pt``."""
    return Path(model_dir) / dataset.value / threat_model.value / f"{name}.pt"


class ModelSource:
    """Base class. ``claim_order``: :func:`~wdro_finetune.models.infer_source` asks the sources in this order
    whether they claim a name; ``downloads_into_model_dir``: the source fills ``model_dir`` itself."""

    name: ClassVar[str]
    claim_order: ClassVar[int]
    downloads_into_model_dir: ClassVar[bool] = False

    def claims(self, model_name: str) -> bool:
        raise NotImplementedError

    def names(self, dataset: Dataset | None, threat_model: ThreatModel | None, pattern: str) -> list[ModelEntry]:
        raise NotImplementedError

    def build(self, request: LoadRequest, num_classes: int, pretrained: bool) -> nn.Module:
        """The architecture (with the source's hub weights when ``pretrained`` and it has them)."""
        raise NotImplementedError

    def own_weights(self, request: LoadRequest) -> tuple[Path | None, str]:
        """(weights file, origin) when neither a checkpoint nor a layout file is given."""
        return None, RANDOM_INIT

    def weights_target(self, module: nn.Module, state: dict[str, torch.Tensor]) -> nn.Module:
        """The (sub)module a loaded state dict belongs to."""
        return module

    def load(self, request: LoadRequest) -> LoadedModel:
        """Build the architecture and load the first weights that apply; the model is in eval mode."""
        weights = request.checkpoint or (request.layout_file if request.layout_file.is_file() else None)
        origin = "checkpoint" if request.checkpoint else "model-dir" if weights else None
        module = self.build(request, NUM_CLASSES[request.dataset], request.pretrained and weights is None)
        if weights is None:
            weights, origin = self.own_weights(request)
        if weights is not None:
            state = read_state_dict(weights, trust=request.trust_checkpoint)
            load_state_into(self.weights_target(module, state), state, weights)
        return LoadedModel(module.eval(), request.name, self.name, str(weights) if weights else None,
                           sha256_file(weights) if weights else None, origin)


MODEL_SOURCES: Registry[ModelSource] = Registry("model source")
