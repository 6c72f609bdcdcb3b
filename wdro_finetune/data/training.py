"""Training batches as a pure function of (seed, step, rank): exact resume needs no loader state.

Each epoch's order is the one ``torch.utils.data.DistributedSampler`` gives (shuffle with seed +
epoch, rank r takes every world-th index, drop_last); the global batch at a step is the union of
the ranks' local batches, so N processes see the same global batches as one. CIFAR batches get a
random crop (4-pixel zero padding) and a horizontal flip; MNIST none.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.utils.data import DistributedSampler

from ..config import Dataset
from .datasets import DataSplit, load_split, split_size
from ..errors import UserError


@dataclass
class TrainStream:
    """x: (N, C, H, W) float32 in [0, 1] on the CPU; y: (N,) int64."""

    x: torch.Tensor
    y: torch.Tensor
    global_batch: int
    seed: int
    augment: bool
    rank: int = 0
    world: int = 1

    def __post_init__(self) -> None:
        if self.global_batch % self.world:
            raise UserError(f"--batch-size {self.global_batch} must be divisible by the {self.world} processes")
        self.local_batch = self.global_batch // self.world
        per_rank = len(self.y) // self.world
        self.steps_per_epoch = per_rank // self.local_batch
        if self.steps_per_epoch < 1:
            raise UserError(f"--batch-size {self.global_batch} is larger than the {len(self.y)} training examples")
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> torch.Tensor:
        """(local_batch,) int64 rows of ``x`` this rank trains on at optimiser step ``step`` (0-based)."""
        epoch, index = divmod(step, self.steps_per_epoch)
        if epoch != self._epoch:
            sampler = DistributedSampler(range(len(self.y)), num_replicas=self.world, rank=self.rank, shuffle=True,
                                         seed=self.seed, drop_last=True)
            sampler.set_epoch(epoch)
            self._epoch, self._order = epoch, torch.tensor(list(sampler))
        return self._order[index * self.local_batch:(index + 1) * self.local_batch]

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's (x, y) at optimiser step ``step`` (0-based, counting across epochs)."""
        idx = self.indices(step)
        x, y = self.x[idx], self.y[idx]
        if self.augment:
            x = crop_flip(x, torch.Generator().manual_seed(step_seed(self.seed, step, self.rank, "augment")))
        return x, y


def step_seed(seed: int, step: int, rank: int, purpose: str = "step") -> int:
    """The seed of one kind of randomness (``purpose``) in one optimiser step on one rank.

    The same in every process: Python's ``hash()`` of a str is salted per process (PYTHONHASHSEED), so
    it must not be used here, or a run resumed in a new process would not reproduce the weights.
    """
    digest = hashlib.sha256(f"{seed}:{step}:{rank}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def crop_flip(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding, and random horizontal flip: (N, C, H, W) -> same shape."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy[:, None] + torch.arange(h)[None]).view(n, 1, h, 1).expand(n, x.shape[1], h, w + 2 * pad)
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None])
    cols = torch.where(flip[:, None], cols.flip(1), cols).view(n, 1, 1, w).expand(n, x.shape[1], h, w)
    return out.gather(3, cols)


def load_train_data(dataset: Dataset, subset: int | None, holdout: int, data_dir: str | None
                    ) -> tuple[DataSplit, DataSplit]:
    """(train, held-out) slices of the TRAINING split (the test set is never touched).

    Without ``subset``: train on all but the last ``holdout`` images, hold those out. With ``subset``:
    train on the first ``subset`` images and hold out the ``holdout`` images after them (so a bundled
    subset file suffices offline). The held-out images serve the per-epoch PGD check.
    """
    if subset is None:
        full = load_split(dataset, "train", None, data_dir=data_dir)
        if holdout >= len(full):
            raise UserError(f"--holdout {holdout} leaves no training data")
        stop = len(full) - holdout
        return _slice(full, 0, stop), _slice(full, stop, len(full))
    total = split_size(dataset, "train")
    if subset + holdout > total:
        raise UserError(f"--train-subset {subset} plus --holdout {holdout} exceed the {total} training images")
    part = load_split(dataset, "train", subset + holdout, data_dir=data_dir)
    return _slice(part, 0, subset), _slice(part, subset, subset + holdout)


def _slice(split: DataSplit, start: int, stop: int) -> DataSplit:
    return DataSplit(split.x[start:stop], split.y[start:stop], split.dataset, split.split, split.file, split.sha256)


def augments(dataset: Dataset) -> bool:
    """Random crop + flip for CIFAR / ImageNet-style data, none for MNIST."""
    return dataset != Dataset.MNIST
