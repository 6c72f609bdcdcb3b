"""The distances metric through the runner: columns, knapsack <= W-PGD, the pointwise curve, resume, bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from wdro_finetune.cli import main
from wdro_finetune.errors import UserError
from wdro_finetune.evaluate.runner import evaluate, make_eval_config
from wdro_finetune.results.records import load_per_example

FAST = dict(dist_steps=30)  # FMN steps: enough for a test, the default is 100


@pytest.fixture(scope="module")
def bundled(tmp_path_factory):
    """The bundled MNIST model, 60 test images, W-PGD and distances at the committed MNIST budgets."""
    records = tmp_path_factory.mktemp("rec")
    options = dict(model="mnist-smallcnn", source="builtin", dataset="mnist", n_examples=60, batch_size=30,
                   metrics="clean,wdro,distances", delta="0.05,0.1,0.2", wdro_steps=20, records=str(records), **FAST)
    torch.set_num_threads(1)
    result = evaluate(make_eval_config(options))
    return result, load_per_example(records, result.record["record_id"])


def test_knapsack_is_at_most_w_pgd_at_every_committed_budget(bundled):
    result, _ = bundled
    m = result.record["metrics"]
    for label in ("1/20", "1/10", "1/5"):
        assert m[f"w2k_acc@{label}"]["value"] <= m[f"w2_acc@{label}"]["value"], label
        assert m[f"w2k_acc@{label}"]["value"] <= m[f"w2k_int_acc@{label}"]["value"] <= m["clean_acc"]["value"]
        assert m[f"w2k_acc@{label}"]["lo"] <= m[f"w2k_acc@{label}"]["value"] <= m[f"w2k_acc@{label}"]["hi"]
    # the W_2 worst case is far below W-PGD at delta = eps / 1.5 on this model (the finding)
    assert m["w2k_acc@1/5"]["value"] < m["w2_acc@1/5"]["value"] - 10


def test_pointwise_curve_and_quantiles_come_from_the_stored_distances(bundled):
    result, arrays = bundled
    m, dist = result.record["metrics"], arrays["dist"]
    assert dist.shape == (60,) and dist.dtype == np.float64 and arrays["dist_attack"].shape == (60,)
    for eps, label in ((0.075, "3/40"), (0.3, "3/10"), (0.45, "9/20")):
        assert m[f"robust_acc@{label}"]["value"] == pytest.approx(100 * np.mean(dist > eps))
    assert m["dist_q25"]["value"] <= m["dist_median"]["value"] <= m["dist_q75"]["value"]
    assert m["dist_median"]["value"] in dist
    clean = arrays["clean"]
    assert np.all(dist[~clean] == 0) and np.all(dist[clean] > 0)
    assert set(arrays["dist_attack"][~clean]) <= {"clean"}
    assert result.record["labels"]["dist_norm"] == "Linf"
    assert result.record["labels"]["dist_attacks"] == "fmn+fab-t+refine-fmn30"
    for label in ("1/20", "1/10", "1/5"):  # best-known = the lower attack, here the knapsack
        assert m[f"w2_best_acc@{label}"] == m[f"w2k_acc@{label}"]
        assert result.record["labels"][f"w2_best_attack@{label}"] == "knapsack"
        assert result.values[f"w2_best_acc@{label}"].value == m[f"w2k_acc@{label}"]["value"]


def test_interrupted_distances_resume_by_chunk_and_equal_an_uninterrupted_run(tmp_path, trained_smallcnn,
                                                                               counting_module, as_loaded):
    options = dict(model="mnist-smallcnn", dataset="mnist", n_examples=16, batch_size=8, metrics="distances",
                   dist_attacks="fmn,refine", **FAST)
    whole = counting_module(trained_smallcnn)
    full = evaluate(make_eval_config(dict(options, records=str(tmp_path / "a"))), model=as_loaded(whole))
    rid = full.record["record_id"]
    arrays = load_per_example(tmp_path / "a", rid)

    class Stop(Exception):
        pass

    def stop_in_second_chunk(batch):  # the second chunk holds test images 8..15
        if model.calls > first_chunk_calls:
            raise Stop

    counter = counting_module(trained_smallcnn)
    evaluate(make_eval_config(dict(options, records=str(tmp_path / "probe"), n_examples=8)),
             model=as_loaded(counter))
    first_chunk_calls = counter.calls  # forwards of the output check and one whole chunk
    model = counting_module(trained_smallcnn, stop_in_second_chunk)
    with pytest.raises(Stop):
        evaluate(make_eval_config(dict(options, records=str(tmp_path / "b"))), model=as_loaded(model))
    state = tmp_path / "b" / "partial" / rid / "distances.npz"
    with np.load(state) as saved:
        assert saved["done"].tolist() == [True, False]
    again = counting_module(trained_smallcnn)
    resumed = evaluate(make_eval_config(dict(options, records=str(tmp_path / "b"))), model=as_loaded(again))
    # forwards: output check 1 + the attack passes of each chunk; the resumed run redoes only the second chunk,
    # so it makes exactly the uninterrupted run's calls minus the first chunk's
    assert again.calls == whole.calls - first_chunk_calls + 1
    assert resumed.record["metrics"] == full.record["metrics"]
    np.testing.assert_array_equal(load_per_example(tmp_path / "b", rid)["dist"], arrays["dist"])


@pytest.mark.parametrize("bad, message", [
    ({"dist_norm": "L3"}, "--dist-norm"), ({"delta": "-0.1"}, "--delta"), ({"dist_eps": "0.1,nan"}, "--dist-eps"),
    ({"dist_attacks": "fmn,deepfool"}, "--dist-attacks"), ({"dist_attacks": "refine"}, "--dist-attacks"),
    ({"dist_steps": "0"}, "--dist-steps"), ({"threat_model": "L1"}, "threat")])
def test_bad_options_are_user_errors(bad, message):
    with pytest.raises(UserError, match=message):
        make_eval_config({"model": "m", "dataset": "mnist", "metrics": "distances", **bad})


def test_cli_bad_input_one_line_exit_2(tmp_path, capsys):
    for argv in (["--dist-norm", "L7"], ["--delta", "-1"]):
        code = main(["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "distances",
                     "--records", str(tmp_path / "r"), *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and "Traceback" not in err[0]
    assert not (tmp_path / "r").exists()


class ShiftedLabels(torch.nn.Module):
    """The bundled model with its logits rolled by one class: wrong wherever the bundled model is right."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).roll(1, dims=1)


def test_no_correctly_classified_point_is_a_user_error(tmp_path, as_loaded):
    from wdro_finetune.config import Dataset, ThreatModel
    from wdro_finetune.models import load_model

    bundled = load_model("mnist-smallcnn", Dataset.MNIST, ThreatModel.LINF).module
    options = dict(model="m", dataset="mnist", n_examples=20, metrics="distances", records=str(tmp_path / "r"))
    with pytest.raises(UserError, match="none of the 20"):  # the bundled model is right on all of the first 50
        evaluate(make_eval_config(options), model=as_loaded(ShiftedLabels(bundled)))
    assert not (tmp_path / "r" / "records.jsonl").exists()
