"""Leaderboard rows: every record of one model and protocol merged, best-known W_2, protocol-grouped ranking,
fractions, and the provenance link of relabelled checkpoints."""

from __future__ import annotations

import csv
import io

import pytest

from results_helpers import accuracy
from wdro_finetune.results.best_known import best_known
from wdro_finetune.results.formatting import eps_text
from wdro_finetune.results.leaderboard import build_leaderboards
from wdro_finetune.results.rows import build_rows


def test_best_known_takes_the_lower_attack_per_budget_with_its_interval_and_name():
    wpgd, knap = accuracy(900, 1000), accuracy(850, 1000)
    metrics = {"w2_acc@1/20": wpgd, "w2k_acc@1/20": knap, "w2_acc@1/5": accuracy(700, 1000),
               "w2k_acc@1/5": accuracy(800, 1000), "w2k_acc@1/10": accuracy(600, 1000),
               "w2k_int_acc@1/20": accuracy(1, 1000), "clean_acc": accuracy(990, 1000)}
    values, labels = best_known(metrics)
    assert values["w2_best_acc@1/20"] == knap and labels["w2_best_attack@1/20"] == "knapsack"
    assert values["w2_best_acc@1/5"]["value"] == 70.0 and labels["w2_best_attack@1/5"] == "w-pgd"
    assert values["w2_best_acc@1/10"]["value"] == 60.0 and labels["w2_best_attack@1/10"] == "knapsack"
    assert set(values) == {"w2_best_acc@1/20", "w2_best_acc@1/5", "w2_best_acc@1/10"}  # the integral one is no budget
    assert best_known({"w2_acc@1/20": wpgd, "w2k_acc@1/20": wpgd})[1]["w2_best_attack@1/20"] == "w-pgd"  # a tie
    assert best_known({"clean_acc": wpgd}) == ({}, {})


def test_two_records_of_one_model_make_one_row_later_wins_and_both_ids_are_listed(make_record, write_records):
    first = make_record("aa1", {"clean_acc": accuracy(980, 1000), "autoattack_acc": accuracy(870, 1000),
                                "w2_acc@1/20": accuracy(959, 1000)}, {"w2_attack": "pgd-redlr-T50"},
                        aa="standard", started_at="2026-01-01T00:00:00+00:00")
    second = make_record("di2", {"clean_acc": accuracy(981, 1000), "w2k_acc@1/20": accuracy(913, 1000),
                                 "dist_median": {"value": 0.21, "n": 1000}},
                         {"dist_norm": "Linf", "dist_attacks": "fmn+fab-t+refine"}, aa=None,
                         started_at="2026-02-01T00:00:00+00:00")
    other_seed = make_record("s1", {"autoattack_acc": accuracy(500, 1000)}, seed=1)
    rows = build_rows(write_records([second, first, other_seed]))[("mnist", "Linf")]
    merged = next(r for r in rows if "aa1" in r.record_ids)
    assert merged.record_ids == ["aa1", "di2"] and len(rows) == 2
    assert merged.value("clean_acc") == 98.1  # the later record wins
    assert merged.value("autoattack_acc") == 87.0 and merged.value("dist_median") == 0.21
    assert merged.value("w2_best_acc@1/20") == 91.3 and merged.labels["w2_best_attack@1/20"] == "knapsack"
    assert merged.protocol.aa_version == "standard"  # the AutoAttack record's protocol, not the newest record's


def test_knapsack_of_another_ground_norm_is_not_compared_with_w_pgd(make_record, write_records):
    rec = make_record("a", {"autoattack_acc": accuracy(870, 1000), "w2_acc@1/20": accuracy(959, 1000),
                            "w2k_acc@1/20": accuracy(100, 1000)}, {"dist_norm": "L2"})
    row = build_rows(write_records([rec]))[("mnist", "Linf")][0]
    assert row.labels["w2_best_attack@1/20"] == "w-pgd" and row.value("w2_best_acc@1/20") == 95.9


def _board(make_record):
    def rec(rid, method, aa, version, n=1000):
        metrics = {"clean_acc": accuracy(980, 1000), **({"autoattack_acc": accuracy(aa, 1000)} if version else {})}
        return make_record(rid, metrics, aa=version, method=method, n_examples=n, checkpoint_sha256=rid)

    return [rec("f1", "fast-best", 880, "fast"), rec("s1", "std-low", 860, "standard"),
            rec("s2", "std-high", 874, "standard"), rec("s3", "std-tie", 874, "standard"),
            rec("n5", "std-500", 990, "standard", n=500), rec("x", "no-aa", 0, None)]


def test_ranking_never_mixes_protocols_standard_autoattack_first(make_record, write_records, tmp_path):
    folder = write_records(_board(make_record))
    rows = build_rows(folder)[("mnist", "Linf")]
    order = [(r.fields["method"], r.rank, r.protocol.aa_version, r.protocol.n_examples) for r in rows]
    assert order == [("std-high", 1, "standard", 1000), ("std-tie", 1, "standard", 1000),
                     ("std-low", 3, "standard", 1000), ("std-500", 1, "standard", 500),
                     ("fast-best", 1, "fast", 1000), ("no-aa", None, None, 1000)]
    build_leaderboards(folder, tmp_path / "lb")
    readme = (tmp_path / "lb" / "README.md").read_text()
    heads = [line for line in readme.splitlines() if line.startswith("### ")]
    assert heads == ["### Standard AutoAttack (apgd-ce, apgd-t, fab-t, square), n = 1000, eps = 0.3",
                     "### Standard AutoAttack (apgd-ce, apgd-t, fab-t, square), n = 500, eps = 0.3",
                     "### Fast AutoAttack (apgd-ce, apgd-t), n = 1000, eps = 0.3", "### No AutoAttack evaluation, "
                     "n = 1000, eps = 0.3"]
    assert "never across protocols" in readme
    table = readme.split("### Fast")[1].splitlines()
    assert table[2].startswith("| rank | model | method | clean | AutoAttack |")
    assert table[4].startswith("| 1 | mnist-smallcnn | fast-best | 98.00 | 88.00 [")
    rows_csv = list(csv.DictReader(io.StringIO((tmp_path / "lb" / "mnist_Linf.csv").read_text())))
    assert [r["rank"] for r in rows_csv] == ["1", "1", "3", "1", "1", ""]


@pytest.mark.parametrize("value, text", [(8 / 255, "8/255"), (0.3, "0.3"), (1 / 510, "1/510"), (0.5, "0.5"),
                                         (0.05, "0.05"), (2 / 255, "2/255"), (0.123456789, "0.123457")])
def test_eps_is_written_as_a_fraction_or_a_short_decimal(value, text):
    assert eps_text(value) == text


def test_main_table_shows_eps_and_budgets_as_fractions_and_three_best_known_budgets(make_record, write_records,
                                                                                     tmp_path):
    w2 = {f"w2_acc@{b}": accuracy(600, 1000) for b in ("1/510", "1/255", "2/255", "4/255", "8/255")}
    rec = make_record("c", {"clean_acc": accuracy(600, 1000), "autoattack_acc": accuracy(300, 1000), **w2},
                      dataset="cifar10", eps=8 / 255)
    build_leaderboards(write_records([rec]), tmp_path / "lb")
    readme = (tmp_path / "lb" / "README.md").read_text()
    assert "eps = 8/255" in readme and "0.0313725" not in readme
    header = next(line for line in readme.splitlines() if line.startswith("| rank"))
    assert header == ("| rank | model | method | clean | AutoAttack | best W_2 @ 1/510 | best W_2 @ 2/255 | "
                      "best W_2 @ 8/255 | n |")
    columns = (tmp_path / "lb" / "cifar10_Linf.csv").read_text().splitlines()[0].split(",")
    assert {"w2_acc@4/255", "w2_best_acc@4/255", "w2_best_attack@4/255"} <= set(columns)  # the CSV keeps all


def test_a_pretrained_labelled_record_of_a_fine_tunes_weights_joins_the_fine_tunes_row(make_record, write_records):
    tuned = make_record("ft", {"autoattack_acc": accuracy(870, 1000)}, method="trades", checkpoint_sha256="abc",
                        training={"method": "trades", "steps": 300})
    copy = make_record("rb", {"w2k_acc@1/20": accuracy(900, 1000)}, method="pretrained", training=None,
                       checkpoint_sha256="abc", checkpoint="/elsewhere/models/mnist/Linf/mnist-smallcnn.pt",
                       started_at="2027-01-01T00:00:00+00:00")
    base = make_record("base", {"autoattack_acc": accuracy(880, 1000)}, method="pretrained", training=None,
                       checkpoint_sha256="bundled")
    rows = build_rows(write_records([tuned, copy, base]))[("mnist", "Linf")]
    assert sorted((r.fields["method"], tuple(r.record_ids)) for r in rows) == [("pretrained", ("base",)),
                                                                               ("trades", ("ft", "rb"))]
    merged = next(r for r in rows if r.fields["method"] == "trades")
    assert merged.records[1]["linked_run"] == {"via": "record", "ref": "ft"}
    assert merged.fields["training"] == {"method": "trades", "steps": 300}
