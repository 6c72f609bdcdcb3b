"""Leaderboards: Wilson intervals, byte-identical rebuilds, newest record wins, ordering and columns."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from wdro_finetune.cli import main
from wdro_finetune.evaluate.values import MetricValue, wilson_interval
from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.records import append_record

REQUIRED = ["rank", "model", "method", "clean_acc", "autoattack_acc", "protocol", "n_examples", "eps", "record_id"]


def test_wilson_interval_against_hand_computed_values():
    # 7 of 10, z = 1.959964: centre = (0.7 + z^2/20) / (1 + z^2/10) = 0.644493,
    # half = z * sqrt(0.21/10 + z^2/400) / (1 + z^2/10) = 0.247715  ->  [39.6778, 89.2209] percent
    # (scipy.stats.binomtest(7, 10).proportion_ci(method="wilson") agrees: 39.67781, 89.22087)
    lo, hi = wilson_interval(7, 10)
    assert lo == pytest.approx(39.6778, abs=1e-3) and hi == pytest.approx(89.2209, abs=1e-3)
    # 0 of 10: [0, z^2/(10 + z^2)] = [0, 27.7533]; 10 of 10 mirrored
    assert wilson_interval(0, 10) == pytest.approx((0.0, 27.7533), abs=1e-3)
    assert wilson_interval(10, 10) == pytest.approx((72.2467, 100.0), abs=1e-3)
    # 450 of 1000: [41.9415, 48.0967]
    assert wilson_interval(450, 1000) == pytest.approx((41.9415, 48.0967), abs=1e-3)


def test_metric_value_accuracy_from_flags():
    value = MetricValue.accuracy(np.array([True] * 7 + [False] * 3))
    assert value.value == pytest.approx(70.0) and value.n == 10
    assert (value.lo, value.hi) == pytest.approx((39.6778, 89.2209), abs=1e-3)


def _record(rid, model, clean, aa, *, method="pretrained", dataset="mnist", threat="Linf", eps=0.3, n=100,
            started="2024-05-01T00:00:00+00:00", extra=None):
    metrics = {"clean_acc": {"value": clean, "n": n, "lo": clean - 5, "hi": clean + 3},
               "autoattack_acc": {"value": aa, "n": n, "lo": aa - 5, "hi": aa + 3}}
    metrics.update(extra or {})
    return {"record_id": rid, "model": model, "source": "builtin", "method": method, "dataset": dataset,
            "threat_model": threat, "eps": eps, "n_examples": n, "seed": 0, "metrics": metrics,
            "labels": {"aa_version": "fast"}, "data_file": "/somewhere/mnist_test.npz", "started_at": started}


@pytest.fixture
def records(tmp_path):
    d = tmp_path / "records"
    append_record(d, _record("r1", "mid", 98.0, 50.0))
    append_record(d, _record("r2", "best", 97.0, 80.0, method="trades"))
    append_record(d, _record("r3", "worst", 99.0, 10.0))
    append_record(d, _record("r4", "stale", 90.0, 99.0, started="2024-05-01T00:00:00+00:00"))
    append_record(d, _record("r4", "stale", 90.0, 20.0, started="2024-06-01T00:00:00+00:00"))  # newer wins
    append_record(d, _record("c1", "cifar", 90.0, 40.0, dataset="cifar10", eps=8 / 255,
                             extra={"wdro_acc": {"value": 33.25, "n": 100, "lo": 24.0, "hi": 43.0},
                                    "wdro_loss": {"value": 1.234567891, "n": 100}}))
    return d


def _read_csv(path):
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_one_csv_per_dataset_and_threat_model_plus_readme(records, tmp_path):
    paths = build_leaderboards(records, tmp_path / "lb")
    assert sorted(p.name for p in paths) == ["README.md", "cifar10_Linf.csv", "mnist_Linf.csv"]


def test_rebuild_is_byte_identical(records, tmp_path):
    first = {p.name: p.read_bytes() for p in build_leaderboards(records, tmp_path / "a")}
    again = {p.name: p.read_bytes() for p in build_leaderboards(records, tmp_path / "a")}
    other = {p.name: p.read_bytes() for p in build_leaderboards(records, tmp_path / "b")}
    assert first == again == other


def test_rows_sorted_by_autoattack_descending_and_newest_record_wins(records, tmp_path):
    build_leaderboards(records, tmp_path / "lb")
    rows = _read_csv(tmp_path / "lb" / "mnist_Linf.csv")
    assert [r["model"] for r in rows] == ["best", "mid", "stale", "worst"]
    assert [r["autoattack_acc"] for r in rows] == ["80.00", "50.00", "20.00", "10.00"]
    assert [r["record_id"] for r in rows].count("r4") == 1


def test_required_columns_and_extra_metric_columns(records, tmp_path):
    build_leaderboards(records, tmp_path / "lb")
    mnist_header = (tmp_path / "lb" / "mnist_Linf.csv").read_text().splitlines()[0].split(",")
    assert set(REQUIRED) <= set(mnist_header)
    assert mnist_header[:3] == ["rank", "model", "method"] and mnist_header[-1] == "record_id"
    assert not any(c.startswith("wdro") for c in mnist_header)
    cifar = _read_csv(tmp_path / "lb" / "cifar10_Linf.csv")
    assert set(REQUIRED) <= set(cifar[0])
    assert cifar[0]["wdro_acc"] == "33.25" and cifar[0]["wdro_acc_lo"] == "24.00"
    assert cifar[0]["wdro_loss"] == "1.23457"
    assert float(cifar[0]["eps"]) == pytest.approx(8 / 255, rel=1e-5)
    readme = (tmp_path / "lb" / "README.md").read_text()
    assert "## cifar10_Linf" in readme and "## mnist_Linf" in readme
    assert "| 1 | best | trades | 97.00 | 80.00 [75.00, 83.00] | 100 |" in readme


def test_leaderboard_cli_writes_the_same_files(records, tmp_path, capsys):
    assert main(["leaderboard", "--records", str(records), "--out", str(tmp_path / "cli")]) == 0
    api = {p.name: p.read_bytes() for p in build_leaderboards(records, tmp_path / "api")}
    cli = {p.name: p.read_bytes() for p in (tmp_path / "cli").iterdir()}
    assert cli == api
    assert "mnist_Linf.csv" in capsys.readouterr().out


def test_leaderboard_cli_without_records_is_a_one_line_error(tmp_path, capsys):
    assert main(["leaderboard", "--records", str(tmp_path / "none"), "--out", str(tmp_path / "lb")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("wdro-finetune: error:")
