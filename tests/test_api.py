"""The Python API: one call, the CLI's option names, typed values; the same record as the CLI writes."""

from __future__ import annotations

import json

import pytest

from wdro_finetune.api import evaluate
from wdro_finetune.cli import main
from wdro_finetune.errors import UserError
from wdro_finetune.evaluate.values import MetricValue


def test_evaluate_by_name_returns_typed_values_and_the_cli_record(tmp_path, capsys):
    options = dict(metrics="clean,distances", n_examples=20, batch_size=20, dist_steps=10, dist_attacks="fmn,refine")
    result = evaluate("mnist-smallcnn", "mnist", records=str(tmp_path / "api"), **options)
    value = result.values["w2k_acc@1/255"]
    assert isinstance(value, MetricValue) and value.n == 20 and value.lo <= value.value <= value.hi
    assert result.values["clean_acc"].value >= value.value
    code = main(["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "clean,distances",
                 "--n-examples", "20", "--batch-size", "20", "--dist-steps", "10", "--dist-attacks", "fmn,refine",
                 "--records", str(tmp_path / "cli")])
    assert code == 0
    (line,) = (tmp_path / "cli" / "records.jsonl").read_text().splitlines()
    cli = json.loads(line)
    assert cli["record_id"] == result.record["record_id"] and cli["metrics"] == result.record["metrics"]
    capsys.readouterr()


def test_evaluate_takes_a_module(tmp_path, trained_smallcnn):
    result = evaluate(trained_smallcnn, "mnist", name="my-cnn", metrics="clean", n_examples=16,
                      records=str(tmp_path))
    assert result.record["model"] == "my-cnn" and 0 <= result.values["clean_acc"].value <= 100


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        evaluate("mnist-smallcnn", "mnist", metrics="distances", dist_norm="L5", records=str(tmp_path))
