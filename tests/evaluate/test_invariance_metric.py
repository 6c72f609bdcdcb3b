"""The invariance and fgsm metrics through the runner, and `invariance generate`."""

from __future__ import annotations

import numpy as np

from wdro_finetune.cli import main
from wdro_finetune.evaluate.runner import evaluate, make_eval_config
from wdro_finetune.results.records import load_per_example


def test_invariance_and_fgsm_columns(tmp_path):
    options = dict(model="mnist-smallcnn", source="builtin", dataset="mnist", n_examples=64, batch_size=64,
                   metrics="clean,fgsm,invariance", inv_n=6, inv_grid="fast", inv_cache=str(tmp_path / "cache"),
                   records=str(tmp_path / "rec"))
    record = evaluate(make_eval_config(options)).record
    m = record["metrics"]
    sizes = {"inv_human_linf03_agree": 100, "inv_human_linf04_agree": 100, "inv_human_linf04_manual_agree": 50,
             "inv_human_l0_agree": 100, "inv_gen_source_rate": 6, "inv_gen_target_rate": 6}
    for name, n in sizes.items():
        assert m[name]["n"] == n and 0 <= m[name]["value"] <= 100
    # a prediction cannot equal both the source and the (different) target label
    assert m["inv_gen_source_rate"]["value"] + m["inv_gen_target_rate"]["value"] <= 100
    # the generated-set flags are stored per example, so two models pair on the same invariance set
    flags = load_per_example(options["records"], record["record_id"])
    for side in ("source", "target"):
        name = f"inv_gen_{side}_rate"
        assert flags[name].shape == (6,) and 100 * np.mean(flags[name]) == m[name]["value"]
    assert not (flags["inv_gen_source_rate"] & flags["inv_gen_target_rate"]).any()
    assert 0 <= m["fgsm_acc"]["value"] <= 100 and m["fgsm_acc"]["n"] == 64
    assert list((tmp_path / "cache").glob("mnist-test-n6-eps0.3-fast.npz"))


def test_invariance_generate_caches_once(tmp_path, capsys):
    args = ["invariance", "generate", "--n", "3", "--grid", "fast", "--out", str(tmp_path)]
    assert main(args) == 0
    path = next(tmp_path.glob("*.npz"))
    stamp = path.stat().st_mtime_ns
    assert main(args) == 0
    assert path.stat().st_mtime_ns == stamp  # nothing regenerated
    assert "3 invariance examples" in capsys.readouterr().out
