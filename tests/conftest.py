"""Shared fixtures.

- ``WDRO_DATA_DIR`` defaults to ``<repo>/../shared/data`` (set at import, before any test module loads,
  so every test directory sees it; a test that needs it unset uses ``monkeypatch.delenv``).
- ``trained_smallcnn``: the builtin ``SmallCNN`` trained cleanly for one epoch on the first 3000 real
  MNIST training images with a fixed seed (a few seconds), so AutoAttack has correct points to attack.
- ``no_network``: makes every socket connection fail, i.e. simulates an offline machine, so that a test
  that exercises a download path can never download anything even where the network is reachable.
- torch runs one intra-op thread (``WDRO_TEST_THREADS`` to change): on 2 shared cores, 2 spinning
  OpenMP threads made AutoAttack 30x slower.
"""

from __future__ import annotations

import copy
import os
import socket
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
os.environ.setdefault("WDRO_DATA_DIR", str(SHARED_DATA))
# OpenMP threads that spin while the 2 cores are shared with other processes made AutoAttack 30x slower
# here (245 s instead of 8 s for 32 MNIST points): idle waiting, and one intra-op thread unless asked.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("WDRO_TEST_THREADS", "1")))

TRAIN_IMAGES = 3000
TRAIN_SEED = 0


def train_smallcnn(n_train: int = TRAIN_IMAGES, seed: int = TRAIN_SEED, epochs: int = 1):
    """SmallCNN trained cleanly (Adam 1e-3, batch 50) on the first ``n_train`` MNIST training images.

    Runs inside ``fork_rng``: the caller's global RNG state is untouched. Returns the model in eval mode.
    """
    from wdro_finetune.data.datasets import images_to_tensor
    from wdro_finetune.models.builtin import SmallCNN

    with np.load(Path(os.environ["WDRO_DATA_DIR"]) / "mnist_train.npz") as data:
        x = images_to_tensor(data["x"][:n_train])
        y = torch.as_tensor(data["y"][:n_train].astype(np.int64))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SmallCNN()
        optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            order = torch.randperm(n_train, generator=generator)
            for start in range(0, n_train, 50):
                idx = order[start:start + 50]
                loss = torch.nn.functional.cross_entropy(model(x[idx]), y[idx])
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
    return model.eval()


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The offline data folder (``$WDRO_DATA_DIR``, by default ``<repo>/../shared/data``)."""
    path = Path(os.environ["WDRO_DATA_DIR"])
    if not (path / "mnist_test.npz").is_file():
        pytest.skip(f"offline data not found at {path}")
    return path


@pytest.fixture(scope="session")
def _trained_smallcnn_master(data_dir):
    return train_smallcnn()


@pytest.fixture
def trained_smallcnn(_trained_smallcnn_master) -> torch.nn.Module:
    """A fresh copy (tests may wrap or move it) of the session's trained SmallCNN, in eval mode."""
    return copy.deepcopy(_trained_smallcnn_master).eval()


@pytest.fixture(scope="session")
def smallcnn_checkpoint(_trained_smallcnn_master, tmp_path_factory) -> Path:
    """The trained SmallCNN saved as safetensors (loadable with ``--checkpoint`` into ``mnist-smallcnn``)."""
    from wdro_finetune.models.checkpoint import save_safetensors

    return save_safetensors(_trained_smallcnn_master, tmp_path_factory.mktemp("ckpt") / "smallcnn.safetensors")


@pytest.fixture(scope="session")
def mnist_test_first64(data_dir):
    """The first 64 MNIST test examples: x (64, 1, 28, 28) float32 in [0, 1], y (64,) int64."""
    from wdro_finetune.config import Dataset
    from wdro_finetune.data.datasets import load_split

    split = load_split(Dataset.MNIST, "test", 64, data_dir=data_dir)
    return split.x, split.y


def loaded(module: torch.nn.Module, name: str = "mnist-smallcnn", source: str = "builtin"):
    """Wrap a module as the ``LoadedModel`` that ``evaluate(..., model=...)`` takes."""
    from wdro_finetune.models import LoadedModel

    return LoadedModel(module.eval(), name, source, None, None)


@pytest.fixture
def as_loaded():
    return loaded


class CountingModule(torch.nn.Module):
    """Wraps a model; counts forward calls and remembers the inputs' batch sizes (no mocking)."""

    def __init__(self, inner: torch.nn.Module, on_call=None):
        super().__init__()
        self.inner = inner
        self.calls = 0
        self.on_call = on_call

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.on_call is not None:
            self.on_call(x)
        return self.inner(x)


@pytest.fixture
def counting_module():
    return CountingModule


class _NetworkDisabled(OSError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Every outgoing connection and name lookup fails at once, as on a machine with no internet."""

    def refuse(*args, **kwargs):
        raise _NetworkDisabled("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
