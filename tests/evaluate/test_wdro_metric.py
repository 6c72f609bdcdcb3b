"""The wdro metric through the runner: columns, budgets, resume of finished budgets, plot."""

from __future__ import annotations

import json

import pytest

from wdro_finetune.evaluate.runner import evaluate, make_eval_config
from wdro_finetune.evaluate.wdro import budget_label
from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.plots import robustness_curve


def test_budget_labels():
    assert budget_label(1 / 510) == "1/510"
    assert budget_label(2 / 510) == "1/255"
    assert budget_label(0.1) == "1/10"
    assert budget_label(0.0123456789) == "0.0123457"


@pytest.fixture()
def options(tmp_path):
    return dict(model="mnist-smallcnn", source="builtin", dataset="mnist", n_examples=40, batch_size=20,
                metrics="clean,wdro", delta="0.05,0.1", wdro_steps=5, records=str(tmp_path / "rec"))


def test_wdro_columns_are_recorded_and_reach_the_leaderboard_and_plot(tmp_path, options):
    rec = evaluate(make_eval_config(options)).record
    evaluate(make_eval_config(dict(options, wdro_p="inf")))
    m = rec["metrics"]
    for label in ("1/20", "1/10"):
        assert 0 <= m[f"w2_acc@{label}"]["value"] <= m["clean_acc"]["value"]
        assert m[f"w2_dist@{label}"]["value"] <= float(eval(label)) * (1 + 1e-4)
        assert {f"w2_Ru@{label}", f"w2_Rl@{label}", f"w2_loss@{label}"} <= set(m)
    assert "upsilon" in m and rec["labels"]["w2_attack"] == "pgd-redlr-T5"
    build_leaderboards(tmp_path / "rec", tmp_path / "lb")
    header = (tmp_path / "lb" / "mnist_Linf.csv").read_text().splitlines()[0].split(",")
    assert {"w2_acc@1/20", "w2_acc@1/20_lo", "winf_acc@1/10", "upsilon"} <= set(header)
    png = robustness_curve(tmp_path / "rec", "mnist", "Linf", tmp_path / "curve.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_finished_budget_is_not_recomputed(tmp_path, options, monkeypatch):
    config = make_eval_config(options)
    first = evaluate(config).record
    # leave a finished budget's state behind as an interrupted run would, with a marker value
    state = tmp_path / "rec" / "partial" / first["record_id"]
    state.mkdir(parents=True)
    cached = {k: v for k, v in first["metrics"].items() if k.endswith("@1/20")}
    cached["w2_acc@1/20"] = dict(cached["w2_acc@1/20"], value=12.5)
    flags = [True] * 40
    (state / "wdro_w2_1_20.json").write_text(json.dumps({**cached, "flags": flags}))
    again = evaluate(config).record
    assert again["metrics"]["w2_acc@1/20"]["value"] == 12.5  # taken from the state, not recomputed
    assert again["metrics"]["w2_acc@1/10"] == first["metrics"]["w2_acc@1/10"]
    assert not state.exists()
