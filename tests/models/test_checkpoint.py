"""Weight files: safetensors / .pt round trips, wrapper keys, leading ``module.`` only, unsafe pickles refused."""

from __future__ import annotations

import io
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from wdro_finetune.errors import UserError
from wdro_finetune.models.builtin import SmallCNN
from wdro_finetune.models.checkpoint import (
    load_weights_into,
    read_state_dict,
    save_robustbench_layout,
    save_safetensors,
    strip_leading_prefix,
)


def _fresh(seed: int) -> SmallCNN:
    torch.manual_seed(seed)
    return SmallCNN().eval()


def _torch_save(obj, path: Path) -> Path:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    path.write_bytes(buffer.getvalue())
    return path


def _same_outputs(a: nn.Module, b: nn.Module, shape=(3, 1, 28, 28)) -> bool:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        return torch.equal(a(x), b(x))


def test_safetensors_round_trip(tmp_path):
    src, dst = _fresh(1), _fresh(2)
    assert not _same_outputs(src, dst)
    path = save_safetensors(src, tmp_path / "w.safetensors")
    load_weights_into(dst, path)
    assert _same_outputs(src, dst)
    assert all(torch.equal(v, dst.state_dict()[k]) for k, v in src.state_dict().items())


@pytest.mark.parametrize("wrap", [None, "state_dict", "model_state_dict", "model"])
def test_pt_round_trip_and_wrapper_keys_are_unwrapped(tmp_path, wrap):
    src, dst = _fresh(1), _fresh(2)
    state = src.state_dict()
    obj = state if wrap is None else {wrap: state, "epoch": 7, "optimizer": {"lr": 0.1}}
    load_weights_into(dst, _torch_save(obj, tmp_path / "w.pt"))
    assert _same_outputs(src, dst)


def test_nested_wrappers_are_unwrapped(tmp_path):
    src, dst = _fresh(1), _fresh(2)
    load_weights_into(dst, _torch_save({"model": {"state_dict": src.state_dict()}}, tmp_path / "w.pt"))
    assert _same_outputs(src, dst)


class _HasBaseModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.base_model = nn.Sequential()
        self.base_model.add_module("fc", nn.Linear(4, 3))
        self.encoder_module = nn.Linear(3, 3)

    def forward(self, x):
        return self.encoder_module(self.base_model(x))


def test_only_a_leading_module_prefix_is_stripped(tmp_path):
    torch.manual_seed(0)
    src = _HasBaseModel()
    keys = list(src.state_dict())
    assert "base_model.fc.weight" in keys
    # DataParallel-style file: every key starts with "module."
    state = {f"module.{k}": v for k, v in src.state_dict().items()}
    read = read_state_dict(_torch_save({"state_dict": state}, tmp_path / "dp.pt"))
    assert sorted(read) == sorted(keys)
    # keys that merely contain "module." / "model." keep their names (RobustBench would give "odel.fc...")
    read = read_state_dict(_torch_save(src.state_dict(), tmp_path / "plain.pt"))
    assert sorted(read) == sorted(keys) and "base_model.fc.weight" in read
    assert not any(k.startswith("odel") for k in read)
    assert strip_leading_prefix({"a.module.b": 1, "module.module.c": 2}, "module.") == \
        {"a.module.b": 1, "module.c": 2}
    dst = _HasBaseModel()
    load_weights_into(dst, tmp_path / "dp.pt")
    x = torch.rand(2, 4)
    assert torch.equal(src(x), dst(x))


class _Marker:
    """A pickle that runs a shell command when loaded."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


@pytest.mark.parametrize("layout", ["zip", "raw-pickle"])
def test_pickle_that_runs_code_is_refused_unless_trusted(tmp_path, layout):
    marker = tmp_path / "MARKER"
    obj = {"state_dict": _fresh(1).state_dict(), "evil": _Marker(marker)}
    path = tmp_path / "evil.pt"
    if layout == "zip":
        _torch_save(obj, path)
    else:
        import pickle

        path.write_bytes(pickle.dumps(_Marker(marker)))
    with pytest.raises(UserError) as err:
        read_state_dict(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message and "trust" in message
    assert not marker.exists(), "refusing must not run the pickled code"
    with pytest.raises(UserError):
        load_weights_into(_fresh(2), path)
    assert not marker.exists()
    if layout == "zip":
        state = read_state_dict(path, trust=True)  # the user vouched for the file: its code runs
        assert marker.exists()
        assert set(state) == set(_fresh(1).state_dict())


@pytest.mark.parametrize("name,data", [
    ("garbage.pt", b"this is not a checkpoint " * 8),
    ("empty.pt", b""),
    ("garbage.safetensors", b"\x00\x01garbage" * 20),
    ("empty.safetensors", b""),
])
def test_corrupt_files_are_user_errors(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    with pytest.raises(UserError) as err:
        load_weights_into(_fresh(0), path)
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_truncated_pt_is_a_user_error(tmp_path):
    full = _torch_save(_fresh(0).state_dict(), tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(full[: len(full) // 2])
    with pytest.raises(UserError):
        load_weights_into(_fresh(0), tmp_path / "cut.pt")


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_state_dict(tmp_path / "nope.safetensors")


def test_mismatching_keys_and_shapes_are_user_errors_and_leave_the_model_unchanged(tmp_path):
    model = _fresh(3)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = save_safetensors(nn.Sequential(nn.Linear(2, 2)), tmp_path / "other.safetensors")
    with pytest.raises(UserError, match="does not match") as err:
        load_weights_into(model, other)
    assert "\n" not in str(err.value)
    wrong_shape = save_safetensors(SmallCNN(num_classes=5), tmp_path / "five.safetensors")
    with pytest.raises(UserError, match="does not match"):
        load_weights_into(model, wrong_shape)
    partial = {k: v for k, v in _fresh(4).state_dict().items() if not k.startswith("classifier")}
    with pytest.raises(UserError, match="missing"):
        load_weights_into(model, save_safetensors(partial, tmp_path / "partial.safetensors"))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())


def test_non_tensor_content_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="no state dict"):
        read_state_dict(_torch_save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pt"))


def test_robustbench_layout_file_is_a_weights_only_state_dict(tmp_path):
    src = _fresh(1)
    path = save_robustbench_layout(src, tmp_path, "cifar10", "Linf", "Mine")
    assert path == tmp_path / "cifar10" / "Linf" / "Mine.pt"
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"state_dict"}
    dst = _fresh(2)
    load_weights_into(dst, path)
    assert _same_outputs(src, dst)
