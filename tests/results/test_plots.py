"""Robustness curves: the knapsack W_2 curve from per-example minimal distances as a continuous line, W-PGD
points, clean accuracy at delta = 0, one panel per row."""

from __future__ import annotations

import matplotlib.image
import numpy as np
import pytest

from results_helpers import accuracy
from wdro_finetune.attacks.knapsack import knapsack_accuracy
from wdro_finetune.cli import main
from wdro_finetune.results.plots import FINE_GRID, curve_data
from wdro_finetune.results.rows import build_rows

# 10 points: 2 misclassified (0), 6 with a known minimal distance, 2 never flipped (inf)
DIST = np.array([0.0, 0.0, 0.02, 0.05, 0.05, 0.1, 0.15, 0.3, np.inf, np.inf])


@pytest.fixture
def folder(make_record, write_records):
    wpgd = make_record("w", {"clean_acc": accuracy(8, 10), "autoattack_acc": accuracy(5, 10),
                             "w2_acc@1/20": accuracy(7, 10), "w2_acc@1/5": accuracy(6, 10)},
                       started_at="2026-01-01T00:00:00+00:00", method="trades", checkpoint_sha256="t")
    dist = make_record("d", {"w2k_acc@1/20": accuracy(6, 10), "dist_median": {"value": 0.1, "n": 10}},
                       {"dist_norm": "Linf"}, aa=None, started_at="2026-02-01T00:00:00+00:00", method="trades",
                       checkpoint_sha256="t")
    base = make_record("b", {"clean_acc": accuracy(9, 10), "autoattack_acc": accuracy(6, 10),
                             "w2_acc@1/20": accuracy(8, 10)}, method="pretrained", checkpoint_sha256="p")
    return write_records([wpgd, dist, base], {"d": {"dist": DIST, "dist_attack": np.array(["fmn"] * 10)}})


def test_knapsack_curve_is_the_exact_allocation_on_a_fine_grid_up_to_the_largest_budget(folder):
    row = next(r for r in build_rows(folder)[("mnist", "Linf")] if r.fields["method"] == "trades")
    curve = curve_data(row, folder)
    deltas, acc = curve["knapsack"]
    assert deltas.shape == (FINE_GRID,) and deltas[0] == 0.0 and deltas[-1] == pytest.approx(0.2)
    np.testing.assert_allclose(acc, knapsack_accuracy(DIST, deltas, p=2.0).accuracy)
    assert acc[0] == 80.0 and np.all(np.diff(acc) <= 0)  # clean accuracy at 0, never increasing
    # W-PGD points on top, with delta = 0 the clean accuracy of the merged row
    assert [(d, a) for d, a, _, _ in curve["points"]["w2"]] == [(0.0, 80.0), (0.05, 70.0), (0.2, 60.0)]
    assert curve["labels"] == ["1/20", "1/5"]


def test_rows_without_distances_have_no_knapsack_curve(folder):
    base = next(r for r in build_rows(folder)[("mnist", "Linf")] if r.fields["method"] == "pretrained")
    assert curve_data(base, folder)["knapsack"] is None


def test_plot_cli_draws_one_panel_per_row(folder, tmp_path, capsys):
    assert main(["plot", "robustness-curve", "--dataset", "mnist", "--records", str(folder),
                 "--out", str(tmp_path / "curve.png")]) == 0
    image = matplotlib.image.imread(tmp_path / "curve.png")
    height, width = image.shape[:2]
    assert width > 1.5 * 3.3 * 120 and height > 2.7 * 120  # two panels side by side (3.3 x 2.7 inches each)


def test_plot_cli_without_curves_is_a_one_line_error(make_record, write_records, tmp_path, capsys):
    folder = write_records([make_record("a", {"clean_acc": accuracy(9, 10)})])
    assert main(["plot", "robustness-curve", "--dataset", "mnist", "--records", str(folder),
                 "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no wdro or distances results" in err
