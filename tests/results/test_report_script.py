"""benchmarks/report.py's seed-level difference: a Welch t interval over seeds, checked by hand."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "report.py"


def _report():
    spec = importlib.util.spec_from_file_location("benchmark_report", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_seed_level_difference_by_hand():
    report = _report()
    # seeds 1, 2, 3 against 0, 0, 0: mean difference 2, standard error sqrt(1/3), Welch df 2, t_0.975(2) = 4.3027
    assert report.seed_level_difference([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == "+2.00 [-0.48, +4.48]"
    # equal variances 1 on both sides: se = sqrt(2/3), df = 4, t_0.975(4) = 2.7764 -> half-width 2.267
    assert report.seed_level_difference([1.0, 2.0, 3.0], [2.0, 3.0, 4.0]) == "-1.00 [-3.27, +1.27]"
    assert report.seed_level_difference([1.0], [0.0, 1.0]) == ""  # one seed: no interval over seeds
    # a fixed baseline (one value): one-sample t over the seeds, se = 1/sqrt(3), df = 2 -> as the first case
    assert report.seed_level_difference([1.0, 2.0, 3.0], [0.0]) == "+2.00 [-0.48, +4.48]"


def test_paired_table_uses_the_base_record_that_has_the_metric(tmp_path, capsys):
    """A base row merged from two evaluations (the second without clean accuracy) still pairs on clean."""
    import numpy as np

    from wdro_finetune.results.records import save_per_example

    report = _report()
    base_flags = np.array([1, 1, 0, 0], dtype=bool)
    save_per_example(tmp_path, "base-clean", {"clean": base_flags})
    save_per_example(tmp_path, "run", {"clean": np.array([1, 1, 1, 0], dtype=bool)})

    def record(record_id, metrics):
        return {"record_id": record_id, "seed": 0, "metrics": {m: {"value": v} for m, v in metrics.items()}}

    groups = {("m", "base", 4): [record("base-clean", {"clean_acc": 50.0}), record("base-dist", {"dist_acc": 1.0})],
              ("m", "run", 4): [record("run", {"clean_acc": 75.0})]}
    report.paired_table(str(tmp_path), groups, "base", ["clean_acc"])
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| m | run")]
    assert len(rows) == 1 and "s0: +25.0 [" in rows[0]


def test_paired_table_pairs_every_seed_with_a_one_seed_base(tmp_path, capsys):
    import numpy as np

    from wdro_finetune.results.records import save_per_example

    report = _report()
    save_per_example(tmp_path, "base", {"clean": np.array([1, 0, 0, 0], dtype=bool)})
    save_per_example(tmp_path, "s1", {"clean": np.array([1, 1, 0, 0], dtype=bool)})
    save_per_example(tmp_path, "s2", {"clean": np.array([1, 1, 1, 0], dtype=bool)})
    groups = {("m", "base", 4): [{"record_id": "base", "seed": 0, "metrics": {"clean_acc": {"value": 25.0}}}],
              ("m", "run", 4): [{"record_id": f"s{s}", "seed": s, "metrics": {"clean_acc": {"value": v}}}
                                for s, v in ((1, 50.0), (2, 75.0))]}
    report.paired_table(str(tmp_path), groups, "base", ["clean_acc"])
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| m | run"))
    # seeds 1, 2: +25 and +50; seed means 62.5 against a fixed 25: sd 17.68, se 12.5, t_0.975(1) = 12.706
    assert "s1: +25.0 [" in row and "s2: +50.0 [" in row and "| +37.50 |" in row
    assert row.endswith("| +37.50 [-121.33, +196.33] |")
