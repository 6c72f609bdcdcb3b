"""Issue 18, usability: --resume from the run folder alone, a finished resume rewrites nothing, config.yaml
reproduces a run, the W-DRO budget cap defaults to eps, sweep paths are relative to the sweep file, progress
lines without a terminal."""

from __future__ import annotations

import logging
import time

import pytest
import yaml

from wdro_finetune.cli import main
from wdro_finetune.config import load_config_file
from wdro_finetune.results.records import read_records
from wdro_finetune.config.finetune import make_finetune_config
from wdro_finetune.config.saved_run import config_yaml
from wdro_finetune.utils.progress import LogProgress, progress_bar

from test_bad_input import FT, assert_one_line_error, snapshot

TINY = FT[:FT.index("--steps")] + FT[FT.index("--steps") + 2:] + ["--checkpoint-every", "1", "--lr", "0.05"]


def test_resume_with_only_the_run_folder_continues_and_a_finished_resume_rewrites_nothing(tmp_path, capsys):
    full, split = tmp_path / "full", tmp_path / "split"
    assert main(TINY + ["--steps", "4", "--out", str(full)]) == 0
    assert main(TINY + ["--steps", "2", "--out", str(split)]) == 0
    assert main(["finetune", "--resume", "--out", str(split), "--steps", "4"]) == 0  # options from run.json
    assert (split / "model.safetensors").read_bytes() == (full / "model.safetensors").read_bytes()
    before = snapshot(split)
    capsys.readouterr()
    assert main(["finetune", "--resume", "--out", str(split)]) == 0
    assert "already finished (4 steps), nothing to do" in capsys.readouterr().out
    assert snapshot(split) == before, "resuming a finished run rewrites nothing"
    rc = main(["finetune", "--resume", "--out", str(split), "--beta", "1", "--schedule", "cosine"])
    assert_one_line_error(rc, capsys.readouterr().err, "beta: 6.0 -> 1.0; schedule: 'constant' -> 'cosine'")
    assert_one_line_error(main(["finetune", "--resume", "--out", str(split), "--steps", "1"]),
                          capsys.readouterr().err, "below the run's checkpoint")
    assert snapshot(split) == before


def test_the_written_config_yaml_reproduces_the_run(tmp_path):
    first = tmp_path / "first"
    assert main(TINY + ["--steps", "2", "--threat", "w2", "--w2-budget-cap", "none", "--out", str(first)]) == 0
    written = load_config_file(first / "config.yaml")
    assert written["w2_budget_cap"] == "none" and written["steps"] == 2 and written["out"] == str(first)
    assert main(["finetune", "--config", str(first / "config.yaml"), "--out", str(tmp_path / "again")]) == 0
    assert (tmp_path / "again" / "model.safetensors").read_bytes() == (first / "model.safetensors").read_bytes()


def test_the_w2_budget_cap_defaults_to_eps_and_none_is_the_uncapped_variant():
    base = dict(model="mnist-smallcnn", dataset="mnist", threat="w2")
    assert make_finetune_config(dict(base, delta=0.2)).w2_budget_cap == pytest.approx(0.3)  # eps
    assert make_finetune_config(dict(base, delta=0.5)).w2_budget_cap == pytest.approx(0.5)  # never below delta
    uncapped = make_finetune_config(dict(base, w2_budget_cap="none"))
    assert uncapped.w2_budget_cap is None
    assert yaml.safe_load(config_yaml(uncapped))["w2_budget_cap"] == "none"
    assert make_finetune_config(dict(base, w2_budget_cap=0.4)).w2_budget_cap == pytest.approx(0.4)
    assert make_finetune_config(dict(model="m", dataset="mnist")).w2_budget_cap is None  # pointwise: no cap


def test_sweep_paths_are_relative_to_the_sweep_file_and_a_rerun_says_what_is_done(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "s.yaml").write_text("records: rec\nruns: ../runs\nmodels: [mnist-smallcnn]\ncommon: {dataset: mnist}\n"
                                   "evaluate: {metrics: clean, n_examples: 4}\nmethods:\n  - name: pretrained\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert main(["sweep", "../exp/s.yaml"]) == 0
    assert len(read_records(folder / "rec")) == 1 and list(elsewhere.iterdir()) == []
    capsys.readouterr()
    assert main(["sweep", str(folder / "s.yaml")]) == 0
    assert capsys.readouterr().out.splitlines()[0].startswith("1 jobs already done")


def test_without_a_terminal_progress_is_a_log_line_at_least_every_interval(monkeypatch, caplog):
    monkeypatch.setenv("WDRO_PROGRESS_SECONDS", "0.05")
    with caplog.at_level(logging.INFO, logger="wdro_finetune.progress"):
        with progress_bar(10, "attack", True, unit="img") as bar:  # pytest's stderr is no terminal
            assert isinstance(bar, LogProgress)
            bar.update(4)
            time.sleep(0.3)
        time.sleep(0.2)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) >= 2 and lines[-1].startswith("attack: 4/10 img (40%)"), lines
    count = len(lines)
    time.sleep(0.2)
    assert len(caplog.records) == count, "no line after close"
