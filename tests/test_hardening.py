"""Issue 18, data loss and wrong results: appends never damage records, bad lines are reported and skipped,
one run per run folder, leaderboards published as a set, model outputs and data arrays validated before
anything is written, one strict option conversion, sweep-owned keys refused, what was loaded is recorded."""

from __future__ import annotations

import json
import logging
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wdro_finetune.cli import main
from wdro_finetune.errors import UserError
from wdro_finetune.evaluate.runner import EvalConfig, make_eval_config
from wdro_finetune.config.options import _field_kinds
from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.records import RECORDS_FILE, append_record, read_records
from wdro_finetune.config.finetune import FinetuneConfig, make_finetune_config
from wdro_finetune.utils.fileio import exclusive_dir, publish_file_set

from test_bad_input import FT, _record, assert_one_line_error, snapshot

EV = ["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--n-examples", "4", "--metrics", "clean"]


def run_cli(capsys, argv: list[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


# ---------------------------------------------------------------- records


def test_an_append_after_a_line_without_newline_keeps_both_and_readers_skip_bad_lines_once(tmp_path, caplog):
    records = tmp_path / "rec"
    append_record(records, _record("a", clean_acc=90.0))
    path = records / RECORDS_FILE
    with open(path, "ab") as fh:
        fh.write(json.dumps(_record("b", clean_acc=80.0)).encode() + b"\n" + b"\xff\xfe not utf-8\n"
                 + b'{"record_id": "cut", "model"')  # a crash mid-line: no newline at the end
    with caplog.at_level(logging.WARNING):
        append_record(records, _record("c", clean_acc=70.0))
    assert path.read_bytes().endswith(b'"model"\n' + json.dumps(_record("c", clean_acc=70.0), sort_keys=True)
                                      .encode() + b"\n")
    assert "no newline" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert [r["record_id"] for r in read_records(records)] == ["a", "b", "c"]
        read_records(records)  # a second read reports nothing new
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2 and ":3 is not UTF-8" in lines[0] and ":4 is not valid JSON" in lines[1], lines


def test_leaderboard_of_only_unreadable_lines_is_an_error_not_an_empty_board(tmp_path, capsys):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / RECORDS_FILE).write_bytes(b'{"record_id": "x", "mod\n\xff\n')
    rc, _, err = run_cli(capsys, ["leaderboard", "--records", str(tmp_path / "rec"), "--out", str(tmp_path / "b")])
    assert_one_line_error(rc, err, "no readable record")
    assert not (tmp_path / "b").exists()


# ---------------------------------------------------------------- one run per run folder


def test_a_second_finetune_into_a_locked_run_folder_is_refused_at_once(tmp_path, capsys, data_dir):
    out = tmp_path / "run"
    with exclusive_dir(out):  # what a running finetune holds
        rc, _, err = run_cli(capsys, FT + ["--out", str(out)])
        assert_one_line_error(rc, err, "another process")
        script = Path(sys.executable).with_name("wdro-finetune")  # and from another process
        done = subprocess.run([str(script), *FT, "--out", str(out)], capture_output=True, text=True, timeout=300)
        assert_one_line_error(done.returncode, done.stderr, "another process")
        assert list(out.iterdir()) == []
    assert main(FT + ["--out", str(out)]) == 0  # free again once the first run ends


def test_a_refused_run_leaves_no_folder_behind(tmp_path, capsys):
    rc, _, err = run_cli(capsys, FT + ["--resume", "--out", str(tmp_path / "a" / "b")])
    assert rc == 2 and not (tmp_path / "a").exists()


# ---------------------------------------------------------------- leaderboards as a set


def test_an_interrupted_publish_leaves_every_old_file_and_files_it_does_not_write(tmp_path):
    out = tmp_path / "boards"
    publish_file_set(out, lambda st: [_text(st / "a.csv", "old a"), _text(st / "README.md", "old readme")])
    (out / "records").mkdir()
    (out / "records" / RECORDS_FILE).write_text("kept\n")
    before = snapshot(out)

    def crash(stage: Path) -> list[Path]:
        _text(stage / "a.csv", "new a")
        raise KeyboardInterrupt  # killed while the second file is made

    with pytest.raises(KeyboardInterrupt):
        publish_file_set(out, crash)
    assert snapshot(out) == before, "all old files, no staging folder left"
    written = publish_file_set(out, lambda st: [_text(st / "a.csv", "new a"), _text(st / "README.md", "new")])
    assert [p.read_text() for p in written] == ["new a", "new"] and (out / "records" / RECORDS_FILE).is_file()


def test_leaderboard_with_its_records_inside_the_output_folder_keeps_them(tmp_path):
    boards = tmp_path / "boards"
    append_record(boards / "records", _record("r1", clean_acc=98.0, autoattack_acc=90.0))
    records_bytes = (boards / "records" / RECORDS_FILE).read_bytes()
    paths = build_leaderboards(boards / "records", boards)
    assert sorted(p.name for p in paths) == ["README.md", "mnist_Linf.csv"]
    assert (boards / "records" / RECORDS_FILE).read_bytes() == records_bytes
    assert sorted(p.name for p in boards.iterdir()) == ["README.md", "mnist_Linf.csv", "records"]


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# ---------------------------------------------------------------- model outputs and data arrays

PLUGIN = '''
import warnings
import torch
from torch import nn
from wdro_finetune.models.builtin import SmallCNN

warnings.warn("a third-party library complains at import")

class Scaled(nn.Module):
    def __init__(self, scale=1.0, rows=None, classes=10):
        super().__init__()
        self.net, self.scale, self.rows, self.classes = SmallCNN(), scale, rows, classes
    def forward(self, x):
        out = self.net(x)[:, :self.classes] * self.scale
        return out[: self.rows] if self.rows else out

def nan_logits(num_classes=10): return Scaled(scale=float("nan"))
def inf_logits(num_classes=10): return Scaled(scale=float("inf"))
def one_row(num_classes=10): return Scaled(rows=1)
def seven_classes(): return Scaled(classes=7)
def raises(num_classes=10): raise RuntimeError("weights server down")
def needs_args(width): return Scaled()
def not_a_module(): return "a string"
def fine(num_classes=10): return Scaled()
'''


@pytest.mark.parametrize("factory,expected", [
    ("nan_logits", "NaN or infinite"), ("inf_logits", "NaN or infinite"), ("one_row", "shape (1, 10)"),
    ("seven_classes", "(16, 7)"), ("raises", "weights server down"), ("needs_args", "width"),
    ("not_a_module", "str"),
])
def test_a_model_that_cannot_be_scored_is_refused_before_anything_is_written(factory, expected, tmp_path, capsys,
                                                                            monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    sys.modules.pop("myplugin", None)
    rc, out, err = run_cli(capsys, ["evaluate", "--model", f"myplugin:{factory}", "--dataset", "mnist",
                                    "--n-examples", "20", "--metrics", "clean", "--records", "rec"])
    assert_one_line_error(rc, err, expected)  # the import-time warning is not printed ahead of the line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "__pycache__") == ["myplugin.py"]
    rc, _, err = run_cli(capsys, FT[:2] + [f"myplugin:{factory}"] + FT[3:] + ["--out", "run"])
    assert rc == 2 and expected in err and not (tmp_path / "run").exists()


def test_a_plugin_without_checkpoint_is_recorded_as_its_factory_weights_not_pretrained(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "myplugin.py").write_text(PLUGIN)
    sys.modules.pop("myplugin", None)
    rc, _, err = run_cli(capsys, ["evaluate", "--model", "myplugin:fine", "--dataset", "mnist", "--n-examples", "4",
                                  "--metrics", "clean", "--records", "rec"])
    assert rc == 0
    [rec] = read_records(tmp_path / "rec")
    assert rec["method"] == "plugin-factory" and rec["weights"] == "factory" and rec["checkpoint"] is None
    assert "third-party library complains" in err  # warnings are printed, after the work, on success


@pytest.mark.parametrize("x,y,expected", [
    (np.zeros((10, 28, 28, 3), np.uint8), np.zeros(10, np.uint8), "'x' is uint8 (10, 28, 28, 3)"),
    (np.zeros((10, 28, 28), np.float32), np.zeros(10, np.uint8), "'x' is float32"),
    (np.zeros((10, 28, 28), np.uint8), np.zeros((10, 2), np.uint8), "'y' is uint8 (10, 2)"),
    (np.zeros((10, 28, 28), np.uint8), np.zeros(9, np.uint8), "10 integer labels"),
    (np.zeros((10, 28, 28), np.uint8), np.arange(10, 20, dtype=np.int64), "outside [0, 10)"),
    (np.zeros((10, 28, 28), np.uint8), np.full(10, -1, np.int64), "outside [0, 10)"),
])
def test_data_files_with_wrong_arrays_are_one_line(x, y, expected, tmp_path, capsys):
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "mnist_test.npz", x=x, y=y)
    rc, _, err = run_cli(capsys, EV + ["--data-dir", str(tmp_path / "data"), "--records", str(tmp_path / "rec")])
    assert_one_line_error(rc, err, expected)
    assert not (tmp_path / "rec").exists()


# ---------------------------------------------------------------- one strict conversion

BAD_BY_KIND = {bool: ["true", "no", 1, 0.0], int: [3.5, 3.0, True, "1e3", "x", 10**20, "9" * 20],
               float: [True, "x", "nan", [1.0]], str: [5, 1.5, ["a"], True], tuple: [5, [1, 2]]}


@pytest.mark.parametrize("cls,make,base", [
    (FinetuneConfig, make_finetune_config, {"model": "mnist-smallcnn", "dataset": "mnist", "out": "x"}),
    (EvalConfig, make_eval_config, {"model": "mnist-smallcnn", "dataset": "mnist"}),
], ids=["finetune", "evaluate"])
def test_every_typed_option_refuses_values_of_the_wrong_type(cls, make, base):
    """Every field, by its annotation: a field added later is covered without a new line here."""
    kinds = _field_kinds(cls)
    assert {"seed", "pretrained", "eps"} <= set(kinds)
    for field, kind in kinds.items():
        for bad in BAD_BY_KIND[kind]:
            with pytest.raises(UserError) as info:
                make({**base, field: bad})
            assert "\n" not in str(info.value)
            assert field.replace("_", "-") in str(info.value) or field in str(info.value), (field, bad, info.value)


def test_every_declared_bound_refuses_the_value_just_outside_it_in_one_line():
    """Every field with bounds (``option(..., gt=, ge=, le=)``): a bound added later is covered here too."""
    from wdro_finetune.config.finetune import finetune_fields
    from wdro_finetune.config.options import option_flag

    bounded = {name: f for name, f in finetune_fields().items() if f.metadata.get("bounds")}
    assert {"lr", "steps", "beta", "armor_t", "momentum", "batch_size", "inner_steps"} <= set(bounded)
    for name, f in bounded.items():
        b = f.metadata["bounds"]
        bad = b.gt if b.gt is not None else b.ge - 1 if b.ge is not None else b.le + 1
        options = {"model": "m", "dataset": "mnist", "out": "x", name: bad}
        with pytest.raises(UserError, match=rf"^{option_flag(f)} must (be|lie in) .*, got {bad:g}"):
            make_finetune_config(options)
        edge = b.ge if b.ge is not None else None
        if edge is not None:
            make_finetune_config({**options, name: edge})  # an inclusive bound admits its value


def test_bounds_read_as_the_messages_say():
    from wdro_finetune.config.options import Bounds

    assert [Bounds(gt=0).describe(), Bounds(ge=0).describe(), Bounds(ge=0, le=1).describe(),
            Bounds(gt=0, le=1).describe(), Bounds(le=1).describe()] == [
        "be > 0", "be >= 0", "lie in [0, 1]", "lie in (0, 1]", "be <= 1"]
    assert Bounds(gt=0, le=1).holds(1) and not Bounds(gt=0, le=1).holds(0) and Bounds(ge=0).holds(0)


def test_the_same_rule_in_yaml_toml_and_sweep_files(tmp_path, capsys):
    (tmp_path / "a.yaml").write_text("model: mnist-smallcnn\ndataset: mnist\nallow_lossy_test: 'false'\n")
    (tmp_path / "b.toml").write_text('model = "mnist-smallcnn"\ndataset = "mnist"\nseed = 1.0\n')
    (tmp_path / "s.yaml").write_text("models: [mnist-smallcnn]\ncommon: {dataset: mnist}\nmethods:\n"
                                     "  - name: t\n    finetune: {steps: 2, pretrained: 'no'}\n")
    for argv, expected in ((["evaluate", "--config", str(tmp_path / "a.yaml")], "--allow-lossy-test"),
                           (["evaluate", "--config", str(tmp_path / "b.toml")], "--seed"),
                           (["sweep", str(tmp_path / "s.yaml"), "--dry-run"], "--pretrained"),
                           (EV + ["--seed", "1" * 20], "--seed"), (EV + ["--device", "mps"], "mps")):
        rc, _, err = run_cli(capsys, argv)
        assert_one_line_error(rc, err, expected)
    assert make_finetune_config({"model": "m", "dataset": "mnist", "seed": "7", "amp": False}).seed == 7


@pytest.mark.parametrize("part", ["common", "evaluate", "finetune"])
@pytest.mark.parametrize("key", ["records", "out", "job_id"])
def test_sweep_keys_the_sweep_owns_are_refused(part, key, tmp_path, capsys):
    (tmp_path / "s.yaml").write_text(f"models: [mnist-smallcnn]\ncommon: {{dataset: mnist}}\nmethods:\n"
                                     f"  - name: t\n    finetune: {{steps: 2}}\n    {part}: {{{key}: elsewhere}}\n")
    rc, _, err = run_cli(capsys, ["sweep", str(tmp_path / "s.yaml"), "--dry-run"])
    assert_one_line_error(rc, err, key)


# ---------------------------------------------------------------- what was loaded


def test_a_model_dir_that_does_not_hold_the_model_is_refused(tmp_path, capsys):
    for folder in (tmp_path / "nope", tmp_path):
        rc, _, err = run_cli(capsys, EV + ["--model-dir", str(folder), "--records", str(tmp_path / "rec")])
        assert_one_line_error(rc, err, str(folder))
        rc, _, err = run_cli(capsys, FT + ["--model-dir", str(folder), "--out", str(tmp_path / "run")])
        assert_one_line_error(rc, err, "--model-dir")
    assert not (tmp_path / "rec").exists() and not (tmp_path / "run").exists()


def test_evaluate_no_pretrained_is_recorded_as_random_init(tmp_path, capsys):
    records = tmp_path / "rec"
    assert main(EV + ["--records", str(records)]) == 0
    assert main(EV + ["--no-pretrained", "--records", str(records)]) == 0
    pre, rand = read_records(records)
    assert (pre["method"], pre["weights"]) == ("pretrained", "bundled")
    assert (rand["method"], rand["weights"], rand["checkpoint"]) == ("random-init", "random-init", None)
    assert pre["record_id"] != rand["record_id"]
    assert pre["metrics"]["clean_acc"]["value"] > rand["metrics"]["clean_acc"]["value"] or \
        math.isclose(pre["metrics"]["clean_acc"]["value"], 100.0)
