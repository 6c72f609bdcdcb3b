"""Test splits: first n in official order, exact vs lossy CIFAR-10 files, and the torchvision path offline."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from wdro_finetune.config import Dataset
from wdro_finetune.data.datasets import ENV_DATA_DIR, load_split, split_size
from wdro_finetune.errors import UserError
from wdro_finetune.utils.fileio import sha256_file

CIFAR10_FIRST1000_SHA256 = "857044e1709626a578661dcdd92ff251efc3a57ba5690df6c31e99a90b58a98f"
CIFAR10_JPEG_SHA256 = "8dcb8da8ef28840137237046f1e20ed2219d163bb4670f65d54a01f093481393"


def _npz(path: Path):
    with np.load(path) as data:
        return data["x"], data["y"]


def test_mnist_first_n_in_official_order_equal_the_npz(data_dir):
    split = load_split(Dataset.MNIST, "test", 50)
    x, y = _npz(data_dir / "mnist_test.npz")
    assert split.x.shape == (50, 1, 28, 28) and split.x.dtype == torch.float32
    assert split.y.dtype == torch.int64
    assert torch.equal(split.x[:, 0], torch.from_numpy(x[:50]).float() / 255)
    assert torch.equal(split.y, torch.from_numpy(y[:50].astype(np.int64)))
    assert 0.0 <= float(split.x.min()) and float(split.x.max()) <= 1.0
    assert split.file == str(data_dir / "mnist_test.npz") and split.lossy is False
    assert split.sha256 == sha256_file(data_dir / "mnist_test.npz")


def test_mnist_train_split_and_full_length(data_dir):
    split = load_split(Dataset.MNIST, "train", 10)
    x, y = _npz(data_dir / "mnist_train.npz")
    assert torch.equal(split.x[:, 0], torch.from_numpy(x[:10]).float() / 255)
    assert len(load_split(Dataset.MNIST, "test")) == split_size(Dataset.MNIST, "test") == 10000


def test_cifar10_up_to_1000_uses_the_exact_file_in_chw(data_dir):
    split = load_split(Dataset.CIFAR10, "test", 1000)
    assert Path(split.file).name == "cifar10_test_first1000.npz"
    assert split.sha256 == CIFAR10_FIRST1000_SHA256 and split.lossy is False
    x, y = _npz(data_dir / "cifar10_test_first1000.npz")
    assert split.x.shape == (1000, 3, 32, 32)
    assert torch.equal(split.x, torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255)
    assert torch.equal(split.y, torch.from_numpy(y.astype(np.int64)))
    # official CIFAR-10 test labels start cat, ship, ship, airplane, frog
    assert split.y[:5].tolist() == [3, 8, 8, 0, 6]


def test_cifar10_over_1000_needs_allow_lossy_test_offline(data_dir):
    with pytest.raises(UserError) as err:
        load_split(Dataset.CIFAR10, "test", 1001, download=False)
    assert "cifar10" in str(err.value) and "--allow-lossy-test" in str(err.value) and "\n" not in str(err.value)
    lossy = load_split(Dataset.CIFAR10, "test", 1001, allow_lossy_test=True)
    assert Path(lossy.file).name == "cifar10_test_jpeg.npz"
    assert lossy.lossy is True and lossy.sha256 == CIFAR10_JPEG_SHA256
    exact = load_split(Dataset.CIFAR10, "test", 1000)
    assert torch.equal(lossy.y[:1000], exact.y), "labels of the JPEG copy are exact"
    error = (lossy.x[:1000] - exact.x).abs().mean().item() * 255
    assert 1.0 < error < 15.0, "JPEG copy is close to, but not equal to, the originals"


def test_cifar10_small_n_prefers_exact_even_when_lossy_allowed():
    split = load_split(Dataset.CIFAR10, "test", 10, allow_lossy_test=True)
    assert Path(split.file).name == "cifar10_test_first1000.npz" and not split.lossy


def test_cifar10_over_1000_uses_an_exact_full_file_when_one_exists(tmp_path, data_dir):
    # an exact full test file in data_dir (built here from first1000 + the JPEG rest, named as the exact file)
    x1, y1 = _npz(data_dir / "cifar10_test_first1000.npz")
    xj, yj = _npz(data_dir / "cifar10_test_jpeg.npz")
    np.savez(tmp_path / "cifar10_test.npz", x=np.concatenate([x1, xj[1000:1200]]),
             y=np.concatenate([y1, yj[1000:1200]]))
    split = load_split(Dataset.CIFAR10, "test", 1100, data_dir=tmp_path)
    assert split.file == str(tmp_path / "cifar10_test.npz") and not split.lossy


def test_n_larger_than_the_split_or_below_one_is_a_user_error():
    with pytest.raises(UserError, match="10000"):
        load_split(Dataset.MNIST, "test", 10001)
    with pytest.raises(UserError):
        load_split(Dataset.MNIST, "test", 0)
    with pytest.raises(UserError):
        load_split(Dataset.MNIST, "validation", 10)


def test_data_dir_is_searched_before_the_environment(tmp_path, data_dir):
    x, y = _npz(data_dir / "mnist_test.npz")
    np.savez(tmp_path / "mnist_test.npz", x=255 - x[:20], y=y[:20])
    split = load_split(Dataset.MNIST, "test", 20, data_dir=tmp_path)
    assert split.file == str(tmp_path / "mnist_test.npz")
    assert torch.equal(split.x[:, 0], torch.from_numpy(255 - x[:20]).float() / 255)
    # asking for more than that file holds falls through to $WDRO_DATA_DIR
    assert load_split(Dataset.MNIST, "test", 21, data_dir=tmp_path).file == str(data_dir / "mnist_test.npz")


def test_corrupt_npz_is_a_user_error(tmp_path):
    (tmp_path / "mnist_test.npz").write_bytes(b"not a zip file")
    with pytest.raises(UserError, match="corrupt"):
        load_split(Dataset.MNIST, "test", 5, data_dir=tmp_path)


# ---------------------------------------------------------------- the online (torchvision) path, offline


def _write_idx_images(path: Path, x: np.ndarray) -> None:
    path.write_bytes(struct.pack(">IIII", 0x00000803, x.shape[0], x.shape[1], x.shape[2]) + x.astype(np.uint8).tobytes())


def _write_idx_labels(path: Path, y: np.ndarray) -> None:
    path.write_bytes(struct.pack(">II", 0x00000801, y.shape[0]) + y.astype(np.uint8).tobytes())


def test_torchvision_path_reads_raw_mnist_files_without_downloading(tmp_path, data_dir, monkeypatch, no_network):
    """torchvision's ``MNIST/raw`` layout built from the npz; no npz anywhere searched, no network."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    xt, yt = _npz(data_dir / "mnist_test.npz")
    xtr, ytr = _npz(data_dir / "mnist_train.npz")
    _write_idx_images(raw / "t10k-images-idx3-ubyte", xt)
    _write_idx_labels(raw / "t10k-labels-idx1-ubyte", yt)
    _write_idx_images(raw / "train-images-idx3-ubyte", xtr)
    _write_idx_labels(raw / "train-labels-idx1-ubyte", ytr)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    # the full split: no bundled first-k subset can hold it, so this must be torchvision's path
    split = load_split(Dataset.MNIST, "test", 10000, data_dir=tmp_path)
    assert split.file.startswith("torchvision:") and split.sha256 is None
    assert torch.equal(split.x[:, 0], torch.from_numpy(xt).float() / 255)
    assert torch.equal(split.y, torch.from_numpy(yt.astype(np.int64)))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing downloaded or added"


def test_missing_data_offline_fails_fast_with_a_user_error(tmp_path, monkeypatch, no_network):
    import time

    monkeypatch.delenv(ENV_DATA_DIR, raising=False)
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_split(Dataset.MNIST, "test", 10000, data_dir=tmp_path)
    assert time.perf_counter() - start < 30
    assert "mnist_test.npz" in str(err.value) and "\n" not in str(err.value)
    assert os.environ.get(ENV_DATA_DIR) is None
