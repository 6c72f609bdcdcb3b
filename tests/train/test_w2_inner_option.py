"""``--w2-inner``: from the command line and a config file to the run's config, label and a resume."""

from __future__ import annotations

import json

from wdro_finetune.cli import main
from wdro_finetune.config.finetune import finetune_fields, make_finetune_config

FT = ["finetune", "--model", "mnist-smallcnn", "--dataset", "mnist", "--no-pretrained", "--train-subset", "32",
      "--holdout", "0", "--batch-size", "16", "--inner-steps", "2", "--schedule", "constant", "--threat", "w2"]


def test_the_flag_reaches_the_run_and_survives_a_resume(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(FT + ["--w2-inner", "knapsack", "--steps", "1", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["config"]["w2_inner"] == "knapsack" and run["label"] == "wdro-knapsack-trades"
    assert "wdro-knapsack-trades: 1 steps" in capsys.readouterr().out
    # the saved config is a valid config again, and a resume must name the same inner maximiser
    assert make_finetune_config(run["config"]).w2_inner == "knapsack"
    assert main(FT + ["--w2-inner", "knapsack", "--steps", "2", "--out", str(out), "--resume"]) == 0
    assert json.loads((out / "run.json").read_text())["step"] == 2
    assert main(FT + ["--w2-inner", "budget", "--steps", "3", "--out", str(out), "--resume"]) == 2
    assert "w2_inner" in capsys.readouterr().err


def test_a_config_file_sets_it_and_the_default_is_w_pgd_budget(tmp_path):
    config = tmp_path / "ft.yaml"
    config.write_text("w2_inner: knapsack\nsteps: 1\n")
    out = tmp_path / "run"
    assert main(FT + ["--config", str(config), "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["config"]["w2_inner"] == "knapsack"
    assert finetune_fields()["w2_inner"].default == "budget"
    assert make_finetune_config(dict(model="m", dataset="mnist", threat="w2")).w2_inner == "budget"
