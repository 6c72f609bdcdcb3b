"""Provenance: weights of a known fine-tune (its RobustBench-layout copy, or any file with a known sha256) are
recorded with that run's method and training config; records keep data files and checkpoints without machine
paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

import wdro_finetune

from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.evaluate.runner import EvalConfig, evaluate
from wdro_finetune.config.finetune import make_finetune_config
from wdro_finetune.train.loop import finetune
from wdro_finetune.utils.fileio import sha256_file

TINY = dict(model="mnist-smallcnn", dataset="mnist", method="trades", inner_steps=1, batch_size=16, train_subset=64,
            holdout=32, lr=0.01, seed=5, pretrained=False, schedule="constant", steps=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ft") / "run"
    finetune(make_finetune_config(dict(TINY, out=str(out))))
    return out


def _evaluate(records: Path, **kw) -> dict:
    config = EvalConfig(model="mnist-smallcnn", dataset=Dataset.MNIST, threat_model=ThreatModel.LINF, eps=0.3,
                        n_examples=16, metrics=("clean",), batch_size=16, records=str(records), **kw)
    return evaluate(config).record


def test_run_json_records_the_sha256_of_the_robustbench_layout_copy(run):
    data = json.loads((run / "run.json").read_text())
    assert data["robustbench_sha256"] == sha256_file(run / "models" / "mnist" / "Linf" / "mnist-smallcnn.pt")
    assert data["model_sha256"] == sha256_file(run / "model.safetensors")


def test_a_model_loaded_from_the_robustbench_layout_copy_is_recorded_as_the_fine_tune(run, tmp_path):
    rec = _evaluate(tmp_path / "records", model_dir=str(run / "models"))
    assert rec["method"] == "trades" and rec["training"]["steps"] == 2 and rec["training"]["seed"] == 5
    assert rec["linked_run"] == {"via": "run.json", "ref": "run"}
    assert rec["checkpoint_sha256"] == sha256_file(run / "models" / "mnist" / "Linf" / "mnist-smallcnn.pt")


def test_a_checkpoint_copied_elsewhere_is_linked_by_its_sha256_in_the_records(run, tmp_path):
    records = tmp_path / "records"
    first = _evaluate(records, checkpoint=str(run / "model.safetensors"))
    assert first["method"] == "trades" and first["linked_run"]["via"] == "run.json"
    copy = tmp_path / "elsewhere" / "weights.safetensors"  # no run.json beside it
    copy.parent.mkdir()
    copy.write_bytes((run / "model.safetensors").read_bytes())
    rec = _evaluate(records, checkpoint=str(copy))
    assert rec["method"] == "trades" and rec["linked_run"] == {"via": "record", "ref": first["record_id"]}
    explicit = _evaluate(records, checkpoint=str(copy), method="my-label")
    assert explicit["method"] == "my-label" and "linked_run" not in explicit  # a stated method is kept


def test_unknown_weights_stay_pretrained_and_records_hold_no_machine_paths(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    rec = _evaluate(tmp_path / "records")  # the bundled weights: an absolute path inside the package
    assert rec["method"] == "pretrained" and rec["training"] is None and "linked_run" not in rec
    assert rec["data_file"] == "mnist_test.npz" and rec["checkpoint"] == "mnist-smallcnn.safetensors"
    text = json.dumps(rec)
    assert str(Path(wdro_finetune.__file__).resolve().parent) not in text
    assert str(Path(os.environ["WDRO_DATA_DIR"]).resolve()) not in text
