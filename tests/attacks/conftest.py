"""Shared fixtures for the attack tests: real MNIST images and a small CNN trained on them.

The model is an ``nn.Sequential`` of built-in layers so that it pickles into spawned processes.
Training: 200 Adam steps on 2000 training images (about 2 s on one CPU core, ~94% test accuracy).
"""

from __future__ import annotations

from contextlib import contextmanager
import os
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn

DATA = Path(os.environ["WDRO_DATA_DIR"])  # set by tests/conftest.py


def load_mnist(split: str, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """First ``n`` images of a split: x (n, 1, 28, 28) float32 in [0, 1], y (n,) int64."""
    with np.load(DATA / f"mnist_{split}.npz") as data:
        x = torch.from_numpy(data["x"][:n].astype(np.float32) / 255.0).unsqueeze(1)
        y = torch.from_numpy(data["y"][:n].astype(np.int64))
    return x, y


def small_cnn() -> nn.Sequential:
    """x (N, 1, 28, 28) in [0, 1] -> logits (N, 10); ~20k parameters."""
    return nn.Sequential(
        nn.Conv2d(1, 8, 5, stride=2, padding=2), nn.ReLU(),
        nn.Conv2d(8, 16, 5, stride=2, padding=2), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 7 * 7, 10),
    )


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, seed: int = 0) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        rows = torch.randint(0, x.shape[0], (64,), generator=generator)
        loss = nn.functional.cross_entropy(model(x[rows]), y[rows])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    optimiser.zero_grad(set_to_none=True)
    return model.eval()


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run torch with ``n`` intra-op threads, then restore the previous count."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


@pytest.fixture(autouse=True)
def single_thread() -> Iterator[None]:
    """One intra-op thread per test: the shared 2-core machine is usually busy, and oversubscribed
    OpenMP threads made these small models several times slower."""
    with torch_threads(1):
        yield


@pytest.fixture(scope="session")
def mnist_test() -> tuple[torch.Tensor, torch.Tensor]:
    return load_mnist("test", 512)


@pytest.fixture(scope="session")
def trained_model() -> nn.Module:
    torch.manual_seed(0)
    x, y = load_mnist("train", 2000)
    with torch_threads(1):
        return train(small_cnn(), x, y, steps=200)
