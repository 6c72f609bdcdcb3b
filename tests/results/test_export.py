"""export robustbench: RobustBench's model_info fields (checked against robustbench's own ModelInfo) with percent
strings, our W_2 / invariance figures in a separate block, and the weights in RobustBench's layout."""

from __future__ import annotations

import dataclasses
import json
import re
from importlib import resources
from pathlib import Path

import pytest
import torch

from results_helpers import accuracy
from wdro_finetune.cli import main
from wdro_finetune.compat import import_robustbench
from wdro_finetune.config import Dataset, ThreatModel
from wdro_finetune.errors import UserError
from wdro_finetune.workflows.export import EXTENSION, PaperInfo, export_robustbench
from wdro_finetune.models import load_model
from wdro_finetune.utils.fileio import sha256_file

EXAMPLE = Path(__file__).parent / "data" / "model_info_example.json"
WEIGHTS = Path(str(resources.files("wdro_finetune") / "assets" / "weights" / "cifar10-resnet-small.safetensors"))
ISSUE_FIELDS = ["link", "name", "authors", "additional_data", "number_forward_passes", "dataset", "venue",
                "architecture", "eps", "clean_acc", "reported", "autoattack_acc", "external", "unreliable", "footnote"]


@pytest.fixture
def records(make_record, write_records):
    common = dict(model="cifar10-resnet-small", dataset="cifar10", eps=8 / 255, method="trades", source="builtin",
                  checkpoint=str(WEIGHTS), checkpoint_sha256=sha256_file(WEIGHTS), training={"method": "trades"})
    first = make_record("aa", {"clean_acc": accuracy(605, 1000), "autoattack_acc": accuracy(310, 1000),
                               "w2_acc@1/255": accuracy(522, 1000)}, aa="fast",
                        started_at="2026-01-01T00:00:00+00:00", **common)
    second = make_record("dd", {"w2k_acc@1/255": accuracy(481, 1000), "robust_acc@8/255": accuracy(296, 1000)},
                         {"dist_norm": "Linf"}, aa=None, started_at="2026-02-01T00:00:00+00:00", **common)
    return write_records([first, second])


def test_model_info_fields_match_robustbench_and_the_committed_example(records, tmp_path):
    info_file, model_file = export_robustbench(records, "dd", tmp_path / "out", name="Ours2026Trades",
                                               paper=PaperInfo(name="A paper", authors="A. Author"))
    assert info_file == tmp_path / "out" / "model_info" / "cifar10" / "Linf" / "Ours2026Trades.json"
    assert model_file == tmp_path / "out" / "models" / "cifar10" / "Linf" / "Ours2026Trades.pt"
    info = json.loads(info_file.read_text())
    assert list(info) == ISSUE_FIELDS + [EXTENSION]
    import_robustbench()
    from robustbench.utils import ModelInfo

    known = {f.name for f in dataclasses.fields(ModelInfo)}
    standard = {k: v for k, v in info.items() if k in known}
    assert set(info) - set(standard) == {"external", "unreliable", EXTENSION}  # RobustBench's JSON extras, ours
    assert dataclasses.asdict(ModelInfo(**standard))["autoattack_acc"] == "31.00"
    for key in ("clean_acc", "reported", "autoattack_acc", "external"):
        assert re.fullmatch(r"\d+\.\d\d", info[key]), key
    assert (info["clean_acc"], info["eps"], info["external"]) == ("60.50", "8/255", "29.60")  # external: lower
    assert info["unreliable"] is True and "Fast AutoAttack" in info["footnote"]  # n = 1000 of 10000, fast
    assert info[EXTENSION]["w2_best_acc"]["1/255"] == {"acc": "48.10", "lo": "45.02", "hi": "51.20",
                                                       "attack": "knapsack"}
    assert info[EXTENSION]["record_ids"] == ["aa", "dd"]
    assert info == json.loads(EXAMPLE.read_text())


def test_exported_weights_load_in_robustbench_layout_and_give_the_same_logits(records, tmp_path):
    _, model_file = export_robustbench(records, "aa", tmp_path / "out")
    state = torch.load(model_file, weights_only=True)["state_dict"]
    ours = load_model("cifar10-resnet-small", Dataset.CIFAR10, ThreatModel.LINF, checkpoint=WEIGHTS).module
    fresh = load_model("cifar10-resnet-small", Dataset.CIFAR10, ThreatModel.LINF, pretrained=False).module
    fresh.load_state_dict(state)
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(fresh.eval()(x), ours(x))
    assert model_file.name == "cifar10-resnet-small_trades.pt"


def test_export_refuses_a_checkpoint_that_is_not_the_recorded_one(records, tmp_path):
    other = tmp_path / "other.safetensors"
    other.write_bytes(WEIGHTS.read_bytes() + b" ")
    with pytest.raises(UserError, match="sha256 differs"):
        export_robustbench(records, "aa", tmp_path / "out", checkpoint=other)


def test_export_cli_errors_are_one_line(records, make_record, write_records, tmp_path, capsys):
    assert main(["export", "robustbench", "--record", "nope", "--records", str(records)]) == 2
    mnist = write_records([make_record("m", {"clean_acc": accuracy(9, 10), "autoattack_acc": accuracy(5, 10)})])
    assert main(["export", "robustbench", "--record", "m", "--records", str(mnist)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and "no record 'nope'" in err[0] and "RobustBench has no mnist Linf leaderboard" in err[1]
