"""Evaluation and training splits as [0,1] float tensors, offline (.npz) or online (torchvision).

Offline files follow ``../shared/data``: ``<dataset>_<split>.npz`` with ``x`` uint8 (N,H,W) or
(N,H,W,C) and ``y`` uint8, in official order. They are looked up in, in order: ``data_dir``, the
``WDRO_DATA_DIR`` environment variable, the small subsets bundled in the package. If none has the
split, torchvision downloads it into ``data_dir`` (default ``./data``). The test split always takes
the FIRST n examples in official order (RobustBench convention).
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import torch

from ..config import NUM_CLASSES, Dataset
from ..errors import UserError
from ..utils.fileio import sha256_file

ENV_DATA_DIR = "WDRO_DATA_DIR"
SPLITS = ("train", "test")
_SPLIT_SIZE = {(Dataset.MNIST, "train"): 60000, (Dataset.MNIST, "test"): 10000,
               (Dataset.CIFAR10, "train"): 50000, (Dataset.CIFAR10, "test"): 10000,
               (Dataset.CIFAR100, "train"): 50000, (Dataset.CIFAR100, "test"): 10000,
               (Dataset.IMAGENET, "test"): 50000}
CIFAR10_EXACT_FIRST1000 = "cifar10_test_first1000.npz"
CIFAR10_LOSSY = "cifar10_test_jpeg.npz"


@dataclass(frozen=True)
class DataSplit:
    """x: (N, C, H, W) float32 in [0, 1]; y: (N,) int64; ``file`` and ``sha256`` say where it came from."""

    x: torch.Tensor
    y: torch.Tensor
    dataset: Dataset
    split: str
    file: str
    sha256: str | None
    lossy: bool = False

    def __len__(self) -> int:
        return int(self.y.shape[0])


def split_size(dataset: Dataset, split: str) -> int:
    """Number of examples in the official split."""
    return _SPLIT_SIZE[(dataset, split)]


def load_split(dataset: Dataset, split: str = "test", n: int | None = None, *, data_dir: str | Path | None = None,
               allow_lossy_test: bool = False, download: bool = True) -> DataSplit:
    """The first ``n`` examples (all if None) of a split, offline when a file is found."""
    if split not in SPLITS or (dataset, split) not in _SPLIT_SIZE:
        raise UserError(f"{dataset.value} has no {split!r} split here; choose one of {', '.join(SPLITS)}")
    check_data_dir(data_dir)
    total = split_size(dataset, split)
    if n is not None and not 1 <= n <= total:
        raise UserError(f"n_examples must be between 1 and {total} for the {dataset.value} {split} split, got {n}")
    found = find_offline_file(dataset, split, n or total, data_dir, allow_lossy_test)
    if found is not None:
        return _load_npz(found, dataset, split, n)
    if not download:
        raise UserError(_missing_message(dataset, split, data_dir))
    return _load_torchvision(dataset, split, n, Path(data_dir or "data"))


def check_data_dir(data_dir: str | Path | None) -> None:
    """UserError when a given data folder exists but is not a folder (its files would silently be looked
    for elsewhere). A missing one is where torchvision downloads to."""
    if data_dir is not None and Path(data_dir).exists() and not Path(data_dir).is_dir():
        raise UserError(f"--data-dir {data_dir} is not a folder")


def search_dirs(data_dir: str | Path | None) -> list[Path]:
    """Folders searched for offline ``.npz`` files, in order."""
    dirs = [Path(data_dir)] if data_dir else []
    if os.environ.get(ENV_DATA_DIR):
        dirs.append(Path(os.environ[ENV_DATA_DIR]))
    dirs.append(Path(str(resources.files("wdro_finetune") / "assets" / "data")))
    return dirs


def find_offline_file(dataset: Dataset, split: str, n: int, data_dir: str | Path | None,
                      allow_lossy_test: bool) -> Path | None:
    """The first offline file that holds the first ``n`` examples exactly (or lossy if allowed)."""
    for folder in search_dirs(data_dir):
        for name in _candidate_files(dataset, split, n, allow_lossy_test):
            path = folder / name
            if path.is_file() and _holds_at_least(path, n):
                return path
    return None


def _candidate_files(dataset: Dataset, split: str, n: int, allow_lossy: bool) -> list[str]:
    names = [f"{dataset.value}_{split}.npz"]
    if dataset == Dataset.CIFAR10 and split == "test":
        if n <= 1000:
            names.append(CIFAR10_EXACT_FIRST1000)
        if allow_lossy:
            names.append(CIFAR10_LOSSY)
    names.append(f"{dataset.value}_{split}_subset.npz")  # bundled first-k subsets
    return names


def _holds_at_least(path: Path, n: int) -> bool:
    try:
        with np.load(path) as data:
            return int(data["y"].shape[0]) >= n
    except (OSError, KeyError, ValueError, EOFError, IndexError, zipfile.BadZipFile) as exc:  # a truncated .npz: BadZipFile
        raise UserError(f"data file {path} is unreadable or corrupt ({type(exc).__name__})") from None


def _load_npz(path: Path, dataset: Dataset, split: str, n: int | None) -> DataSplit:
    try:
        with np.load(path) as data:
            x, y = data["x"], data["y"]
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(f"data file {path} is unreadable or corrupt ({type(exc).__name__})") from None
    check_arrays(x, y, dataset, path)
    x, y = x[:n], y[:n]
    return DataSplit(images_to_tensor(x), torch.as_tensor(y.astype(np.int64)), dataset, split, str(path),
                     sha256_file(path), lossy=path.name == CIFAR10_LOSSY)


_IMAGE_SHAPES = {Dataset.MNIST: [(28, 28), (28, 28, 1)], Dataset.CIFAR10: [(32, 32, 3)],
                 Dataset.CIFAR100: [(32, 32, 3)]}


def check_arrays(x: np.ndarray, y: np.ndarray, dataset: Dataset, path: Path) -> None:
    """UserError naming the file unless x is uint8 images of the data set's shape, y (N,) integer labels in
    [0, classes) and both have N rows."""
    shapes = _IMAGE_SHAPES.get(dataset)
    if x.dtype != np.uint8 or (shapes and tuple(x.shape[1:]) not in shapes) or x.ndim not in (3, 4):
        want = " or ".join(f"(N, {', '.join(map(str, s))})" for s in shapes) if shapes else "(N, H, W, C)"
        raise UserError(f"data file {path}: 'x' is {x.dtype} {tuple(x.shape)}, expected uint8 {want}")
    if y.ndim != 1 or y.shape[0] != x.shape[0] or not np.issubdtype(y.dtype, np.integer):
        raise UserError(f"data file {path}: 'y' is {y.dtype} {tuple(y.shape)}, expected {x.shape[0]} integer labels")
    classes = NUM_CLASSES[dataset]
    if len(y) and (int(y.min()) < 0 or int(y.max()) >= classes):
        raise UserError(f"data file {path}: labels in [{int(y.min())}, {int(y.max())}], outside [0, {classes})")


def images_to_tensor(x: np.ndarray) -> torch.Tensor:
    """uint8 (N,H,W) or (N,H,W,C) -> float32 (N,C,H,W) in [0, 1]."""
    if x.ndim == 3:
        x = x[:, None]
    else:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)


def _missing_message(dataset: Dataset, split: str, data_dir) -> str:
    where = " or ".join(str(d) for d in search_dirs(data_dir)[:-1]) or f"--data-dir or ${ENV_DATA_DIR}"
    lossy = (f", or pass --allow-lossy-test to use the JPEG copy {CIFAR10_LOSSY} beyond the first 1000 images"
             if dataset == Dataset.CIFAR10 and split == "test" else "")
    return (f"no {dataset.value} {split} data offline: put {dataset.value}_{split}.npz in {where} "
            f"(or run online to download it){lossy}")


def _load_torchvision(dataset: Dataset, split: str, n: int | None, root: Path) -> DataSplit:
    """Online path: torchvision downloads into ``root`` (skipped when the files are already there)."""
    import torchvision

    train = split == "train"
    try:
        if dataset == Dataset.MNIST:
            ds = torchvision.datasets.MNIST(str(root), train=train, download=True)
            x, y = ds.data[:n].numpy(), ds.targets[:n].numpy()
        elif dataset in (Dataset.CIFAR10, Dataset.CIFAR100):
            cls = torchvision.datasets.CIFAR10 if dataset == Dataset.CIFAR10 else torchvision.datasets.CIFAR100
            ds = cls(str(root), train=train, download=True)
            x, y = ds.data[:n], np.asarray(ds.targets[:n])
        else:
            return _load_imagenet_val(root, n)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"{_missing_message(dataset, split, root)} ({type(exc).__name__}: download failed)") from None
    return DataSplit(images_to_tensor(np.asarray(x)), torch.as_tensor(np.asarray(y).astype(np.int64)), dataset,
                     split, f"torchvision:{root}", None)


def _load_imagenet_val(root: Path, n: int | None) -> DataSplit:
    """ImageNet validation images (torchvision layout under ``root``), resized 256 and centre-cropped 224."""
    import torchvision
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor()])
    ds = torchvision.datasets.ImageNet(str(root), split="val", transform=tf)
    count = len(ds) if n is None else n
    items = [ds[i] for i in range(count)]
    x = torch.stack([it[0] for it in items])
    y = torch.tensor([it[1] for it in items], dtype=torch.int64)
    return DataSplit(x, y, Dataset.IMAGENET, "test", f"torchvision:{root}", None)
