"""Sharded evaluation under torchrun: 2 gloo processes write the record that 1 process writes."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from wdro_finetune.errors import UserError
from wdro_finetune.evaluate.sharding import shard_rows
from wdro_finetune.results.records import load_per_example, read_records


def test_shards_are_whole_batches_covering_every_row_once():
    rows = [shard_rows(250, 32, rank, 3) for rank in range(3)]
    assert [(r.start, r.stop) for r in rows] == [(0, 64), (64, 160), (160, 250)]
    with pytest.raises(UserError, match="batches"):
        shard_rows(40, 32, 0, 3)


def _evaluate(records, *launcher):
    command = [*launcher, "-m", "wdro_finetune.cli", "evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist",
               "--n-examples", "96", "--batch-size", "32", "--metrics", "clean,fgsm,autoattack,wdro,distances",
               "--dist-steps", "10", "--dist-attacks", "fmn,refine",
               "--aa-version", "custom", "--aa-attacks", "apgd-ce", "--delta", "0.05,0.2", "--wdro-steps", "5",
               "--records", str(records)]
    done = subprocess.run(command, env=dict(os.environ, OMP_NUM_THREADS="1"), capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    (record,) = read_records(records)
    return record, load_per_example(records, record["record_id"])


def test_two_gloo_processes_give_the_single_process_record(tmp_path):
    one, one_flags = _evaluate(tmp_path / "one", sys.executable)
    two, two_flags = _evaluate(tmp_path / "two", sys.executable, "-m", "torch.distributed.run", "--nproc-per-node",
                               "2", "--master-port", "29641")
    assert one["record_id"] == two["record_id"] and one["n_examples"] == two["n_examples"] == 96
    assert set(one["metrics"]) == set(two["metrics"]) and {"w2_acc@1/5", "w2k_acc@1/5"} <= set(one["metrics"])
    for name, value in one["metrics"].items():
        assert two["metrics"][name]["n"] == value["n"] == 96, name
        assert two["metrics"][name]["value"] == pytest.approx(value["value"], rel=1e-4, abs=1e-6, nan_ok=True), name
    assert set(one_flags) == set(two_flags)
    for name in one_flags:
        np.testing.assert_array_equal(one_flags[name], two_flags[name], err_msg=name)
    # the attacks did something: robust accuracy below clean accuracy
    assert one["metrics"]["w2_acc@1/5"]["value"] < one["metrics"]["clean_acc"]["value"]
