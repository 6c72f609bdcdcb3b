"""Small built-in architectures that train on a laptop CPU. Inputs in [0,1]; normalisation inside.

- ``mnist-smallcnn``: 4 conv (32-32-64-64) + FC 200-200-10, the usual MNIST robustness CNN
  (Carlini-Wagner / TRADES SmallCNN), ~0.3M parameters.
- ``cifar10-resnet-small``: pre-activation ResNet-18 layout with widths 16-32-64-128, ~0.7M parameters.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F

from ..config import Dataset, ThreatModel
from ..errors import UserError
from ..registry import unknown_name_message
from .source import MODEL_SOURCES, RANDOM_INIT, LoadRequest, ModelEntry, ModelSource

log = logging.getLogger(__name__)


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` for x: (N, C, H, W) in [0, 1]."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class SmallCNN(nn.Module):
    """MNIST CNN: x (N, 1, 28, 28) in [0, 1] -> logits (N, 10)."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1):
        super().__init__()
        self.normalize = Normalize((0.1307,), (0.3081,))
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3), nn.ReLU(),
            nn.Conv2d(32, 32, 3), nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3), nn.ReLU(),
            nn.Conv2d(64, 64, 3), nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * 4 * 4, 200), nn.ReLU(),
            nn.Linear(200, 200), nn.ReLU(),
            nn.Linear(200, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


class PreActBlock(nn.Module):
    """Pre-activation basic block (He et al. 2016)."""

    def __init__(self, in_planes: int, planes: int, stride: int):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Conv2d(in_planes, planes, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + skip


class PreActResNetSmall(nn.Module):
    """Pre-activation ResNet-18 layout, widths ``(w, 2w, 4w, 8w)``: x (N, 3, 32, 32) -> logits."""

    def __init__(self, num_classes: int = 10, width: int = 16,
                 mean: tuple[float, ...] = (0.4914, 0.4822, 0.4465),
                 std: tuple[float, ...] = (0.2471, 0.2435, 0.2616)):
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
        layers, in_planes = [], width
        for i, stride in enumerate((1, 2, 2, 2)):
            planes = width * 2**i
            layers += [PreActBlock(in_planes, planes, stride), PreActBlock(planes, planes, 1)]
            in_planes = planes
        self.layers = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(in_planes)
        self.linear = nn.Linear(in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(self.conv1(self.normalize(x)))
        out = F.relu(self.bn(out))
        out = F.adaptive_avg_pool2d(out, 1).flatten(1)
        return self.linear(out)


@dataclass(frozen=True)
class BuiltinModel:
    """Facts about one built-in architecture (and its bundled weights, when there are some)."""

    name: str
    dataset: Dataset
    factory: Callable[[], nn.Module]
    weights_file: str | None = None  # file name under wdro_finetune/assets/weights/


BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel("mnist-smallcnn", Dataset.MNIST, SmallCNN, "mnist-smallcnn.safetensors"),
        BuiltinModel("cifar10-resnet-small", Dataset.CIFAR10, PreActResNetSmall, "cifar10-resnet-small.safetensors"),
    )
}


class BuiltinSource(ModelSource):
    """The architectures above, with their bundled weights (``assets/weights``); a random initialisation is
    seeded (``init_seed``), so it is reproducible."""

    name = "builtin"
    claim_order = 1

    def claims(self, model_name: str) -> bool:
        return model_name in BUILTIN_MODELS

    def names(self, dataset: Dataset | None, threat_model: ThreatModel | None, pattern: str) -> list[ModelEntry]:
        return [ModelEntry(self.name, n, m.dataset.value) for n, m in BUILTIN_MODELS.items()
                if dataset in (None, m.dataset)]

    def build(self, request: LoadRequest, num_classes: int, pretrained: bool) -> nn.Module:
        if request.name not in BUILTIN_MODELS:
            raise UserError(unknown_name_message("builtin model", request.name, list(BUILTIN_MODELS)))
        info = BUILTIN_MODELS[request.name]
        if info.dataset != request.dataset:
            raise UserError(f"builtin model {request.name} is for {info.dataset.value}, not {request.dataset.value}")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(request.init_seed)
            return info.factory()

    def own_weights(self, request: LoadRequest) -> tuple[Path | None, str]:
        path = bundled_weights(request.name) if request.pretrained else None
        return (path, "bundled") if path else (None, RANDOM_INIT)


def bundled_weights(name: str) -> Path | None:
    """Path of the bundled pretrained weights of a builtin model, or None (random init, warned)."""
    file_name = BUILTIN_MODELS[name].weights_file
    if file_name:
        path = Path(str(resources.files("wdro_finetune") / "assets" / "weights" / file_name))
        if path.is_file():
            return path
    log.warning("no bundled weights for %s: using a randomly initialised model", name)
    return None


MODEL_SOURCES.add(BuiltinSource.name, BuiltinSource())
