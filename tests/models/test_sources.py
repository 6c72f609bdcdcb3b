"""Model sources: builtin, plugin (``module:factory``), timm, RobustBench (offline, temporary model-dir)."""

from __future__ import annotations

import sys
import textwrap
import time
import uuid
from pathlib import Path

import pytest
import torch
from torch import nn

from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.errors import UserError
from wdro_finetune.models import infer_source, list_models, load_model
from wdro_finetune.models.checkpoint import save_robustbench_layout, save_safetensors
from wdro_finetune.utils.fileio import sha256_file

LINF = ThreatModel.LINF


def _outputs(module: nn.Module, shape, seed: int = 0) -> torch.Tensor:
    x = torch.rand(shape, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return module.eval()(x)


# ---------------------------------------------------------------- builtin


def test_builtin_cifar10_resnet_small_is_under_1m_parameters_and_maps_to_10_logits():
    loaded = load_model("cifar10-resnet-small", Dataset.CIFAR10, LINF, pretrained=False)
    assert loaded.source == "builtin" and not loaded.module.training
    assert sum(p.numel() for p in loaded.module.parameters()) <= 1_000_000
    assert _outputs(loaded.module, (2, 3, 32, 32)).shape == (2, 10)


def test_builtin_mnist_smallcnn_maps_to_10_logits():
    loaded = load_model("mnist-smallcnn", Dataset.MNIST, LINF, pretrained=False)
    assert _outputs(loaded.module, (2, 1, 28, 28)).shape == (2, 10)
    convs = [m for m in loaded.module.modules() if isinstance(m, nn.Conv2d)]
    linears = [m for m in loaded.module.modules() if isinstance(m, nn.Linear)]
    assert [c.out_channels for c in convs] == [32, 32, 64, 64]
    assert [lin.out_features for lin in linears] == [200, 200, 10]


def test_builtin_with_checkpoint_loads_those_weights(smallcnn_checkpoint, trained_smallcnn):
    loaded = load_model("mnist-smallcnn", Dataset.MNIST, LINF, checkpoint=smallcnn_checkpoint)
    assert torch.equal(_outputs(loaded.module, (4, 1, 28, 28)), _outputs(trained_smallcnn, (4, 1, 28, 28)))
    assert loaded.weights_sha256 == sha256_file(smallcnn_checkpoint)
    assert loaded.weights_path == str(smallcnn_checkpoint)


def test_builtin_for_the_wrong_dataset_is_a_user_error():
    with pytest.raises(UserError, match="cifar10"):
        load_model("cifar10-resnet-small", Dataset.MNIST, LINF)


# ---------------------------------------------------------------- plugin


@pytest.fixture
def plugin_module(tmp_path, monkeypatch):
    """A plugin module written to tmp_path and importable through sys.path."""
    name = f"wdro_test_plugin_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn

        RECEIVED = []

        def build(num_classes):
            RECEIVED.append({"num_classes": num_classes})
            torch.manual_seed(0)
            return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes))

        def build_any(**kwargs):
            RECEIVED.append(dict(kwargs))
            return nn.Sequential(nn.Flatten(), nn.Linear(784, kwargs["num_classes"]))

        def build_plain():
            RECEIVED.append({})
            return nn.Sequential(nn.Flatten(), nn.Linear(784, 10))

        def not_a_model():
            return "hello"
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_plugin_factory_loads_by_module_colon_factory_and_gets_num_classes(plugin_module):
    spec = f"{plugin_module}:build"
    assert infer_source(spec) == "plugin"
    loaded = load_model(spec, Dataset.CIFAR100, LINF)
    assert loaded.source == "plugin"
    assert _outputs(loaded.module, (2, 3, 32, 32)).shape == (2, 100)
    module = sys.modules[plugin_module]
    assert module.RECEIVED[-1] == {"num_classes": 100}


def test_plugin_factory_with_kwargs_gets_num_classes_and_dataset(plugin_module):
    load_model(f"{plugin_module}:build_any", Dataset.MNIST, LINF)
    assert sys.modules[plugin_module].RECEIVED[-1] == {"num_classes": 10, "dataset": "mnist"}
    load_model(f"{plugin_module}:build_plain", Dataset.MNIST, LINF)
    assert sys.modules[plugin_module].RECEIVED[-1] == {}


def test_plugin_with_checkpoint_loads_weights(plugin_module, tmp_path):
    first = load_model(f"{plugin_module}:build_any", Dataset.MNIST, LINF).module
    path = save_safetensors(first, tmp_path / "plugin.safetensors")
    second = load_model(f"{plugin_module}:build_any", Dataset.MNIST, LINF, checkpoint=path).module
    assert torch.equal(_outputs(first, (3, 1, 28, 28)), _outputs(second, (3, 1, 28, 28)))


def test_plugin_errors_are_user_errors(plugin_module):
    with pytest.raises(UserError, match="not a torch nn.Module"):
        load_model(f"{plugin_module}:not_a_model", Dataset.MNIST, LINF)
    with pytest.raises(UserError, match="no callable"):
        load_model(f"{plugin_module}:missing", Dataset.MNIST, LINF)
    with pytest.raises(UserError, match="cannot import"):
        load_model("no_such_module_xyz:build", Dataset.MNIST, LINF)


# ---------------------------------------------------------------- timm


def test_timm_resnet18_without_pretrained_loads_checkpoint(tmp_path, no_network):
    reference = load_model("timm:resnet18", Dataset.CIFAR10, LINF, pretrained=False)
    assert reference.source == "timm"
    torch.manual_seed(3)
    with torch.no_grad():
        for p in reference.module.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = save_safetensors(reference.module, tmp_path / "resnet18.safetensors")
    loaded = load_model("timm:resnet18", Dataset.CIFAR10, LINF, checkpoint=path)  # pretrained: not downloaded
    out = _outputs(loaded.module, (2, 3, 32, 32))
    assert out.shape == (2, 10)
    assert torch.equal(out, _outputs(reference.module, (2, 3, 32, 32)))
    assert loaded.weights_sha256 == sha256_file(path)


def test_timm_checkpoint_of_the_bare_timm_network_loads(tmp_path, no_network):
    import timm

    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = save_safetensors(net, tmp_path / "bare.safetensors")
    loaded = load_model("timm:resnet18", Dataset.CIFAR10, LINF, checkpoint=path).module
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), loaded[1].state_dict().values()))


def test_timm_mnist_gets_one_input_channel(no_network):
    loaded = load_model("timm:resnet18", Dataset.MNIST, LINF, pretrained=False)
    assert _outputs(loaded.module, (2, 1, 28, 28)).shape == (2, 10)


def test_unknown_timm_name_suggests_close_names():
    with pytest.raises(UserError, match="resnet18"):
        load_model("timm:resnet19x", Dataset.CIFAR10, LINF, pretrained=False)


# ---------------------------------------------------------------- listing


def test_list_models_has_builtin_and_robustbench_names():
    builtin = {e.name for e in list_models("builtin")}
    assert {"mnist-smallcnn", "cifar10-resnet-small"} <= builtin
    cifar_linf = list_models("robustbench", Dataset.CIFAR10, LINF)
    names = {e.name for e in cifar_linf}
    assert "Wong2020Fast" in names and len(names) > 50
    assert all(e.dataset == "cifar10" and e.threat_model == "Linf" for e in cifar_linf)
    assert list_models("robustbench", Dataset.MNIST, LINF) == []
    assert {e.name for e in list_models("builtin", Dataset.MNIST)} == {"mnist-smallcnn"}
    timm_resnets = {e.name for e in list_models("timm", pattern="resnet1*")}
    assert "timm:resnet18" in timm_resnets
    with pytest.raises(UserError):
        list_models("nowhere")


# ---------------------------------------------------------------- RobustBench


@pytest.fixture(scope="module")
def wong_model_dir(tmp_path_factory):
    """Wong2020Fast's architecture with random weights in a RobustBench-layout model-dir."""
    from wdro_finetune.compat import import_robustbench

    import_robustbench()
    from robustbench.model_zoo import model_dicts
    from robustbench.model_zoo.enums import BenchmarkDataset, ThreatModel as RBThreat

    torch.manual_seed(11)
    model = model_dicts[BenchmarkDataset("cifar10")][RBThreat("Linf")]["Wong2020Fast"]["model"]().eval()
    model_dir = tmp_path_factory.mktemp("models")
    path = save_robustbench_layout(model, model_dir, "cifar10", "Linf", "Wong2020Fast")
    return model, model_dir, path


def test_robustbench_name_loads_from_model_dir_with_no_network(wong_model_dir, no_network):
    original, model_dir, path = wong_model_dir
    assert path == model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt"
    loaded = load_model("Wong2020Fast", Dataset.CIFAR10, LINF, model_dir=model_dir)
    assert loaded.source == "robustbench" and not loaded.module.training
    assert loaded.weights_sha256 == sha256_file(path)
    out = _outputs(loaded.module, (4, 3, 32, 32))
    assert out.shape == (4, 10)
    assert torch.equal(out, _outputs(original, (4, 3, 32, 32)))


def test_robustbench_file_also_loads_in_robustbench_itself(wong_model_dir, no_network):
    from wdro_finetune.compat import import_robustbench

    original, model_dir, _ = wong_model_dir
    theirs = import_robustbench().utils.load_model("Wong2020Fast", model_dir=str(model_dir), dataset="cifar10",
                                                    threat_model="Linf")
    assert torch.equal(_outputs(theirs, (2, 3, 32, 32)), _outputs(original, (2, 3, 32, 32)))


def test_robustbench_architecture_with_explicit_checkpoint(wong_model_dir, tmp_path, no_network):
    original, _, path = wong_model_dir
    loaded = load_model("Wong2020Fast", Dataset.CIFAR10, LINF, model_dir=tmp_path / "empty", checkpoint=path)
    assert torch.equal(_outputs(loaded.module, (2, 3, 32, 32)), _outputs(original, (2, 3, 32, 32)))


def test_robustbench_missing_file_offline_names_the_exact_path(tmp_path, no_network):
    model_dir = tmp_path / "models"
    start = time.perf_counter()
    with pytest.raises(UserError) as err:
        load_model("Wong2020Fast", Dataset.CIFAR10, LINF, model_dir=model_dir)
    assert time.perf_counter() - start < 30, "offline failure must be fast"
    message = str(err.value)
    assert "\n" not in message
    assert str(model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt") in message
    assert not (model_dir / "cifar10" / "Linf" / "Wong2020Fast.pt").exists()


def test_robustbench_unknown_name_suggests_close_names():
    with pytest.raises(UserError, match="Wong2020Fast"):
        load_model("Wong2020Fsat", Dataset.CIFAR10, LINF)
    with pytest.raises(UserError, match="no RobustBench models"):
        load_model("Wong2020Fast", Dataset.MNIST, LINF)


def test_bundled_weights_match_their_training_record_and_are_trained(data_dir):
    import json

    from wdro_finetune.data.datasets import load_split
    from wdro_finetune.models.outputs import predict
    from wdro_finetune.models.builtin import BUILTIN_MODELS

    assets = Path(__file__).resolve().parents[2] / "wdro_finetune" / "assets" / "weights"
    for name, entry in BUILTIN_MODELS.items():
        record = json.loads((assets / f"{entry.name}.json").read_text())
        assert record["sha256"] == sha256_file(assets / entry.weights_file), name
        assert record["command"].startswith("python benchmarks/pretrain_base.py")
        loaded = load_model(name, entry.dataset, LINF)
        assert loaded.weights_sha256 == record["sha256"]
        data = load_split(entry.dataset, "test", 200, data_dir=data_dir)
        accuracy = (predict(loaded.module.eval(), data.x, "cpu", 100) == data.y).float().mean().item()
        assert accuracy > (0.9 if entry.dataset == Dataset.MNIST else 0.4), (name, accuracy)
    total = sum((assets / e.weights_file).stat().st_size for e in BUILTIN_MODELS.values())
    assert total <= 5 * 2**20
