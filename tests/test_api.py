"""The Python API: one call, the CLI's option names, typed values; the same record as the CLI writes."""

from __future__ import annotations

import json

import pytest

from wdro_finetune.api import evaluate
from wdro_finetune.cli import main
from wdro_finetune.errors import UserError
from wdro_finetune.evaluate.values import MetricValue


def test_evaluate_by_name_returns_typed_values_and_the_cli_record(tmp_path, capsys):
    options = dict(metrics="clean,distances", n_examples=20, batch_size=20, dist_steps=10, dist_attacks="fmn,refine")
    result = evaluate("mnist-smallcnn", "mnist", records=str(tmp_path / "api"), **options)
    value = result.values["w2k_acc@1/255"]
    assert isinstance(value, MetricValue) and value.n == 20 and value.lo <= value.value <= value.hi
    assert result.values["clean_acc"].value >= value.value
    code = main(["evaluate", "--model", "mnist-smallcnn", "--dataset", "mnist", "--metrics", "clean,distances",
                 "--n-examples", "20", "--batch-size", "20", "--dist-steps", "10", "--dist-attacks", "fmn,refine",
                 "--records", str(tmp_path / "cli")])
    assert code == 0
    (line,) = (tmp_path / "cli" / "records.jsonl").read_text().splitlines()
    cli = json.loads(line)
    assert cli["record_id"] == result.record["record_id"] and cli["metrics"] == result.record["metrics"]
    capsys.readouterr()


def test_evaluate_takes_a_module(tmp_path, trained_smallcnn):
    result = evaluate(trained_smallcnn, "mnist", name="my-cnn", metrics="clean", n_examples=16,
                      records=str(tmp_path))
    assert result.record["model"] == "my-cnn" and 0 <= result.values["clean_acc"].value <= 100


def test_bad_options_are_user_errors(tmp_path):
    with pytest.raises(UserError):
        evaluate("mnist-smallcnn", "mnist", metrics="distances", dist_norm="L5", records=str(tmp_path))


# ---------------------------------------------------------------- one function per subcommand

def test_every_subcommand_has_an_api_function_with_the_flag_names():
    import dataclasses

    from wdro_finetune import api
    from wdro_finetune.cli import _COMMANDS, _Parser
    from wdro_finetune.workflows import options

    declared = {"models": options.ModelsOptions, "leaderboard": options.LeaderboardOptions,
                "export": options.ExportOptions, "invariance": options.InvarianceOptions,
                "sweep": options.SweepOptions, "plot": options.PlotOptions, "demo": options.DemoOptions}
    for cmd, (add, _, _) in _COMMANDS.items():
        assert callable(getattr(api, cmd)), cmd
        if cmd in declared:
            parser = _Parser(add_help=False)
            add(parser)
            flags = {a.dest: a.default for a in parser._actions}
            fields = {f.name: f.default for f in dataclasses.fields(declared[cmd])}
            assert set(flags) == set(fields), cmd
            assert all(flags[k] == v for k, v in fields.items() if v is not dataclasses.MISSING
                       and k not in {"format", "action"}), cmd  # positionals: the API's default only


def test_models_returns_typed_entries(capsys):
    from wdro_finetune.api import ModelEntry, models

    entries = models(source="builtin", dataset="mnist")
    assert entries and all(isinstance(e, ModelEntry) for e in entries)
    assert "mnist-smallcnn" in [e.name for e in entries] and {e.dataset for e in entries} == {"mnist"}
    assert main(["models", "--source", "builtin", "--dataset", "mnist"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"builtin\t{e.name}\tmnist" for e in entries]


@pytest.mark.parametrize("call", [
    lambda api: api.models(sorce="builtin"),  # a typo
    lambda api: api.models(source="hub"),  # not one of the choices
    lambda api: api.export(records="results"),  # no record
    lambda api: api.plot("bar-chart", dataset="mnist", out="p.png"),
    lambda api: api.invariance("make"),
    lambda api: api.invariance(n=0),
    lambda api: api.sweep("nope.yaml", dry_run=True),
    lambda api: api.leaderboard(records="nope"),
])
def test_api_mistakes_are_user_errors(call, tmp_path, monkeypatch):
    from wdro_finetune import api

    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError):
        call(api)


SWEEP = """
records: records
runs: runs
models: [mnist-smallcnn]
seeds: [0, 1]
common: {dataset: mnist, threat_model: Linf}
evaluate: {metrics: clean, n_examples: 16, batch_size: 16}
methods:
  - name: pretrained
"""


def test_sweep_leaderboard_and_plot_return_what_the_cli_prints(tmp_path, capsys):
    from wdro_finetune import api

    (tmp_path / "sweep.yaml").write_text(SWEEP)
    plan = api.sweep(tmp_path / "sweep.yaml", dry_run=True)
    assert isinstance(plan, api.SweepRun) and len(plan.jobs) == 2 and plan.summary() == "2 jobs to run"
    lines: list[str] = []
    run = api.sweep(str(tmp_path / "sweep.yaml"), job=plan.jobs[0].job_id, report=lines.append)
    assert [r["job_id"] for r in run.records] == [plan.jobs[0].job_id] and lines[0].startswith("[1/1] ")
    assert lines[1] == api.summary_line(run.records[0])
    assert main(["sweep", str(tmp_path / "sweep.yaml"), "--dry-run"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [f"1 jobs already done (records in {tmp_path / 'records'})", plan.jobs[1].describe(),
                   "1 jobs to run"]
    files = api.leaderboard(records=str(tmp_path / "records"), out=str(tmp_path / "boards"))
    assert files and all(p.is_file() for p in files)
    assert main(["leaderboard", "--records", str(tmp_path / "records"), "--out", str(tmp_path / "boards")]) == 0
    assert capsys.readouterr().out.splitlines() == [str(p) for p in files]
    with pytest.raises(UserError, match="no wdro or distances results"):
        api.plot("robustness-curve", dataset="mnist", records=str(tmp_path / "records"), out=str(tmp_path / "c.png"))
