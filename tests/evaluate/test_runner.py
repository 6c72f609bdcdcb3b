"""The evaluation runner: records with full provenance, per-example arrays, stable ids, per-chunk resume."""

from __future__ import annotations

import dataclasses
import io
import json

import numpy as np
import pytest
import torch

from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.errors import UserError
from wdro_finetune.evaluate.autoattack import AutoAttackMetric
from wdro_finetune.evaluate.runner import EvalConfig, evaluate, make_eval_config
from wdro_finetune.evaluate.values import wilson_interval
from wdro_finetune.models.checkpoint import save_safetensors
from wdro_finetune.results.records import RECORDS_FILE, load_per_example, read_records
from wdro_finetune.utils.fileio import sha256_file

MNIST_TEST_SHA256 = "3ba302235efdc3e7e4e84db9ce6a6d6cbc9dd1162d4e79dd0b6a606afc745423"
CIFAR10_FIRST1000_SHA256 = "857044e1709626a578661dcdd92ff251efc3a57ba5690df6c31e99a90b58a98f"
FAST = {"autoattack": AutoAttackMetric.options_from({"aa_version": "fast"})}


def mnist_config(records, **kw) -> EvalConfig:
    base = dict(model="mnist-smallcnn", dataset=Dataset.MNIST, threat_model=ThreatModel.LINF, eps=0.3,
                n_examples=32, metrics=("clean", "autoattack"), metric_options=FAST, batch_size=32, seed=0,
                records=str(records))
    base.update(kw)
    return EvalConfig(**base)


# ---------------------------------------------------------------- records


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, smallcnn_checkpoint):
    """One real evaluation (clean + fast AutoAttack) of the trained SmallCNN loaded from a checkpoint."""
    records = tmp_path_factory.mktemp("records")
    result = evaluate(mnist_config(records, checkpoint=str(smallcnn_checkpoint), source="builtin"))
    return result, records


def test_evaluate_appends_one_record_with_full_provenance(evaluated, smallcnn_checkpoint, data_dir):
    result, records = evaluated
    lines = (records / RECORDS_FILE).read_text().splitlines()
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec == json.loads(json.dumps(result.record, sort_keys=True))
    for key in ("record_id", "model", "source", "checkpoint_sha256", "method", "dataset", "data_file", "data_sha256",
                "threat_model", "eps", "n_examples", "metrics", "seed", "device", "versions", "git_commit",
                "started_at", "wall_seconds"):
        assert key in rec, key
    assert rec["model"] == "mnist-smallcnn" and rec["source"] == "builtin" and rec["method"] == "pretrained"
    assert rec["checkpoint_sha256"] == sha256_file(smallcnn_checkpoint)
    assert rec["dataset"] == "mnist" and rec["threat_model"] == "Linf" and rec["eps"] == 0.3
    assert rec["n_examples"] == 32 and rec["seed"] == 0 and rec["device"] == "cpu"
    assert rec["data_file"].endswith("mnist_test.npz") and rec["data_sha256"] == MNIST_TEST_SHA256
    assert rec["data_sha256"] == sha256_file(data_dir / "mnist_test.npz")
    assert set(rec["versions"]) >= {"python", "torch", "robustbench", "pyautoattack", "wdro_finetune"}
    assert rec["versions"]["robustbench"] == "1.1.1" and rec["versions"]["pyautoattack"] == "0.2.0"
    assert rec["versions"]["torch"].split("+")[0] == torch.__version__.split("+")[0]
    assert rec["wall_seconds"] > 0 and rec["started_at"].endswith("+00:00")
    assert set(rec["metrics"]) == {"clean_acc", "autoattack_acc"}


def test_record_metrics_are_percent_with_wilson_interval_from_per_example_flags(evaluated):
    result, records = evaluated
    rec = result.record
    arrays = load_per_example(records, rec["record_id"])
    assert set(arrays) == {"clean", "autoattack"}
    for metric, flags in (("clean_acc", arrays["clean"]), ("autoattack_acc", arrays["autoattack"])):
        assert flags.shape == (32,) and flags.dtype == bool
        value = rec["metrics"][metric]
        k = int(flags.sum())
        assert value["n"] == 32
        assert value["value"] == pytest.approx(100 * k / 32)
        lo, hi = wilson_interval(k, 32)
        assert (value["lo"], value["hi"]) == pytest.approx((lo, hi))
    assert arrays["clean"].sum() >= 28, "the trained SmallCNN classifies nearly all of the first 32 images"
    assert not np.any(arrays["autoattack"] & ~arrays["clean"]), "robust implies correct"
    assert not (records / "partial" / rec["record_id"]).exists(), "partial state is removed when done"


def test_same_config_gives_the_same_record_id_and_a_new_line(tmp_path, smallcnn_checkpoint):
    config = mnist_config(tmp_path, metrics=("clean",), metric_options={}, checkpoint=str(smallcnn_checkpoint))
    first = evaluate(config).record
    second = evaluate(config).record
    assert first["record_id"] == second["record_id"]
    assert first["metrics"] == second["metrics"]
    assert len(read_records(tmp_path)) == 2
    other = evaluate(mnist_config(tmp_path, metrics=("clean",), metric_options={}, seed=1,
                                  checkpoint=str(smallcnn_checkpoint))).record
    assert other["record_id"] != first["record_id"]


def test_different_weights_give_a_different_record_id(tmp_path, smallcnn_checkpoint, trained_smallcnn):
    with torch.no_grad():
        trained_smallcnn.classifier[-1].bias.add_(0.01)
    changed = save_safetensors(trained_smallcnn, tmp_path / "changed.safetensors")
    a = evaluate(mnist_config(tmp_path, metrics=("clean",), n_examples=8, checkpoint=str(smallcnn_checkpoint)))
    b = evaluate(mnist_config(tmp_path, metrics=("clean",), n_examples=8, checkpoint=str(changed)))
    assert a.record["checkpoint_sha256"] != b.record["checkpoint_sha256"]
    assert a.record["record_id"] != b.record["record_id"]


def test_cifar10_small_n_uses_the_exact_first1000_file(tmp_path):
    result = evaluate(EvalConfig(model="cifar10-resnet-small", dataset=Dataset.CIFAR10, threat_model=ThreatModel.LINF,
                                 eps=8 / 255, n_examples=16, metrics=("clean",), batch_size=16, records=str(tmp_path)))
    rec = result.record
    assert rec["data_file"].endswith("cifar10_test_first1000.npz")
    assert rec["data_sha256"] == CIFAR10_FIRST1000_SHA256 and rec["data_lossy"] is False


def test_cifar10_lossy_copy_is_used_only_when_allowed_and_marked(tmp_path, no_network):
    config = EvalConfig(model="cifar10-resnet-small", dataset=Dataset.CIFAR10, threat_model=ThreatModel.LINF,
                        eps=8 / 255, n_examples=1001, metrics=("clean",), batch_size=500, records=str(tmp_path),
                        data_dir=str(tmp_path / "data"))
    with pytest.raises(UserError):
        evaluate(config)
    assert not (tmp_path / RECORDS_FILE).exists()
    rec = evaluate(dataclasses.replace(config, allow_lossy_test=True)).record
    assert rec["data_file"].endswith("cifar10_test_jpeg.npz") and rec["data_lossy"] is True
    assert rec["n_examples"] == 1001


# ---------------------------------------------------------------- options


def test_make_eval_config_defaults_and_validation():
    config = make_eval_config({"model": "m", "dataset": "cifar10"})
    assert config.eps == pytest.approx(8 / 255) and config.threat_model is ThreatModel.LINF
    assert config.n_examples == 1000 and config.metrics == ("clean", "autoattack")
    assert config.metric_options["autoattack"]["aa_version"] == "standard"
    assert make_eval_config({"model": "m", "dataset": "mnist"}).eps == pytest.approx(0.3)
    assert make_eval_config({"model": "m", "dataset": "cifar10", "threat_model": "L2"}).eps == pytest.approx(0.5)
    assert make_eval_config({"model": "m", "dataset": "cifar10", "eps": "8/255"}).eps == pytest.approx(8 / 255)
    fast = make_eval_config({"model": "m", "dataset": "mnist", "aa_version": "fast"})
    assert fast.metric_options["autoattack"]["aa_attacks"] == ["apgd-ce", "apgd-t"]
    for bad in ({"eps": 0}, {"eps": -0.1}, {"eps": 8}, {"eps": "abc"}, {"eps": "nan"}, {"n_examples": 0},
                {"n_examples": 10001}, {"batch_size": 0}, {"metrics": "clean,nope"}, {"aa_version": "custom"},
                {"aa_version": "custom", "aa_attacks": "apgd-ce,pgd"}, {"threat_model": "L3"}, {"dataset": "svhn"},
                {"device": "tpu"}, {"n_examples": "many"}):
        with pytest.raises(UserError):
            make_eval_config({"model": "m", "dataset": "mnist", **bad})


# ---------------------------------------------------------------- per-chunk resume


class ChunkTracker:
    """Called on every forward: which chunk of the test inputs each row is a (perturbed) copy of."""

    def __init__(self, x: torch.Tensor, chunk: int, eps: float):
        self.x, self.chunk, self.eps = x.flatten(1), chunk, eps
        self.calls: list[frozenset[int]] = []

    def __call__(self, batch: torch.Tensor) -> None:
        dist = (batch.detach().flatten(1)[:, None, :] - self.x[None]).abs().amax(-1)  # Linf, (B, n)
        nearest = dist.argmin(1)
        assert torch.all(dist.gather(1, nearest[:, None]) <= self.eps + 1e-5)
        self.calls.append(frozenset(int(i) // self.chunk for i in nearest))


def test_resume_recomputes_only_unfinished_chunks_and_gives_the_same_flags(
        tmp_path, trained_smallcnn, mnist_test_first64, counting_module, as_loaded):
    n, chunk, eps = 32, 8, 0.3
    x = mnist_test_first64[0][:n]
    config_a = mnist_config(tmp_path / "a", metrics=("autoattack",), batch_size=chunk, eps=eps, n_examples=n)

    full_tracker = ChunkTracker(x, chunk, eps)
    full_model = counting_module(trained_smallcnn, full_tracker)
    full = evaluate(config_a, model=as_loaded(full_model))
    rid = full.record["record_id"]
    full_flags = load_per_example(tmp_path / "a", rid)["autoattack"]
    full_tracker.calls.pop(0)  # the output check's probe forward, before any metric
    assert all(len(c) == 1 for c in full_tracker.calls), "each forward pass sees one chunk only"
    assert {c for s in full_tracker.calls for c in s} == {0, 1, 2, 3}

    # an interrupted run: chunks 0 and 2 finished and saved, 1 and 3 not
    done = np.array([True, False, True, False])
    saved = np.zeros(n, dtype=bool)
    for i in np.flatnonzero(done):
        saved[i * chunk:(i + 1) * chunk] = full_flags[i * chunk:(i + 1) * chunk]
    state = tmp_path / "b" / "partial" / rid / "autoattack.npz"
    state.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    np.savez(buffer, flags=saved, done=done)
    state.write_bytes(buffer.getvalue())

    tracker = ChunkTracker(x, chunk, eps)
    model = counting_module(trained_smallcnn, tracker)
    resumed = evaluate(mnist_config(tmp_path / "b", metrics=("autoattack",), batch_size=chunk, eps=eps, n_examples=n),
                       model=as_loaded(model))
    assert resumed.record["record_id"] == rid
    tracker.calls.pop(0)  # the probe
    touched = {c for s in tracker.calls for c in s}
    assert touched == {1, 3}, f"only unfinished chunks are attacked, touched {touched}"
    expected_calls = sum(1 for s in full_tracker.calls if s <= {1, 3})
    assert model.calls - 1 == expected_calls > 0
    assert model.calls < full_model.calls
    np.testing.assert_array_equal(load_per_example(tmp_path / "b", rid)["autoattack"], full_flags)
    assert resumed.record["metrics"] == full.record["metrics"]
    assert not state.exists() and not state.parent.exists()


def test_resume_with_every_chunk_done_runs_no_attack(tmp_path, trained_smallcnn, counting_module, as_loaded):
    config = mnist_config(tmp_path, metrics=("autoattack",), batch_size=8, n_examples=16)
    first = evaluate(config, model=as_loaded(trained_smallcnn)).record
    flags = load_per_example(tmp_path, first["record_id"])["autoattack"]
    state = tmp_path / "partial" / first["record_id"] / "autoattack.npz"
    state.parent.mkdir(parents=True)
    buffer = io.BytesIO()
    np.savez(buffer, flags=flags, done=np.array([True, True]))
    state.write_bytes(buffer.getvalue())
    model = counting_module(trained_smallcnn)
    second = evaluate(config, model=as_loaded(model)).record
    assert model.calls == 1  # the output check's probe only: no attack
    assert second["metrics"] == first["metrics"]


def test_missing_data_fails_before_any_model_is_loaded_or_downloaded(tmp_path, no_network):
    config = EvalConfig(model="Wong2020Fast", dataset=Dataset.CIFAR10, threat_model=ThreatModel.LINF, eps=8 / 255,
                        n_examples=2000, metrics=("clean",), records=str(tmp_path / "rec"),
                        data_dir=str(tmp_path / "data"), model_dir=str(tmp_path / "models"))
    with pytest.raises(UserError, match="cifar10_test.npz"):
        evaluate(config)
    assert not (tmp_path / "models").exists(), "no model download was attempted"
