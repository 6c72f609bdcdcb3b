"""Sweeps: jobs keyed by config hash, skipped when done, shards partition the grid."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wdro_finetune.cli import main
from wdro_finetune.errors import UserError
from wdro_finetune.results.records import read_records
from wdro_finetune.workflows.sweep import load_sweep, parse_shard, pending_jobs, run_pending_job

SPEC = """
records: {records}
runs: {runs}
models: [mnist-smallcnn]
seeds: [0, 1]
common: {{dataset: mnist, threat_model: Linf}}
evaluate: {{metrics: clean, n_examples: 20, batch_size: 20}}
methods:
  - name: pretrained
    seeds: [0]
  - name: trades
    finetune: {{method: trades, steps: 2, train_subset: 64, holdout: 16, batch_size: 16, inner_steps: 1,
                pretrained: false}}
"""


def _write(tmp_path: Path) -> Path:
    path = tmp_path / "sweep.yaml"
    path.write_text(SPEC.format(records=tmp_path / "records", runs=tmp_path / "runs"))
    return path


def test_dry_run_lists_jobs_and_counts(tmp_path, capsys):
    assert main(["sweep", str(_write(tmp_path)), "--dry-run"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "3 jobs to run" and len(out) == 4


def test_job_ids_are_stable_and_shards_partition_the_grid(tmp_path):
    path = _write(tmp_path)
    a, b = load_sweep(path), load_sweep(path)
    assert [j.job_id for j in a.jobs] == [j.job_id for j in b.jobs]
    shards = [pending_jobs(a, (i, 2)) for i in (1, 2)]
    ids = [j.job_id for s in shards for j in s]
    assert sorted(ids) == sorted(j.job_id for j in a.jobs) and len(set(ids)) == 3


def test_job_option_runs_only_the_named_jobs_and_refuses_unknown_ids(tmp_path, capsys):
    path = _write(tmp_path)
    ids = [j.job_id for j in load_sweep(path).jobs]
    assert main(["sweep", str(path), "--dry-run", "--job", ids[1]]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == "1 jobs to run" and out[0].startswith(ids[1])
    assert main(["sweep", str(path), "--dry-run", "--job", "nope"]) == 2
    assert "no job nope in the sweep" in capsys.readouterr().err


def test_a_finished_sweep_finds_every_job_done_and_changes_nothing(tmp_path, capsys):
    path = _write(tmp_path)
    assert main(["sweep", str(path), "--shard", "1/2"]) == 0
    assert main(["sweep", str(path), "--shard", "2/2"]) == 0
    records = (tmp_path / "records" / "records.jsonl").read_bytes()
    assert len(read_records(tmp_path / "records")) == 3
    capsys.readouterr()
    assert main(["sweep", str(path), "--dry-run"]) == 0
    assert capsys.readouterr().out.strip().endswith("0 jobs to run")
    assert main(["sweep", str(path)]) == 0
    assert (tmp_path / "records" / "records.jsonl").read_bytes() == records
    methods = sorted(r["method"] for r in read_records(tmp_path / "records"))
    assert methods == ["pretrained", "trades", "trades"]


def test_a_job_finished_by_another_process_meanwhile_is_not_run_again(tmp_path):
    sweep = load_sweep(_write(tmp_path))
    job = next(j for j in pending_jobs(sweep) if j.finetune is None)
    stale = pending_jobs(sweep)  # listed before the job ran, like a second shard started earlier
    assert run_pending_job(job, sweep)["job_id"] == job.job_id
    records = (tmp_path / "records" / "records.jsonl").read_bytes()
    assert job in stale and run_pending_job(job, sweep) is None
    assert (tmp_path / "records" / "records.jsonl").read_bytes() == records


@pytest.mark.parametrize("text", ["", "models: [a]\nmethods: []\n", "models: [a]\nmethods: [{finetune: {}}]\n",
                                  "models: [a\n", "models: [a]\nmethods: [{name: x}]\nbogus: 1\n"])
def test_bad_sweep_files_are_user_errors(tmp_path, text):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(UserError):
        load_sweep(path)


def test_shard_syntax():
    assert parse_shard("2/4") == (2, 4)
    for bad in ("0/2", "3/2", "x"):
        with pytest.raises(UserError):
            parse_shard(bad)


REPO = Path(__file__).resolve().parents[1]


def test_committed_sweep_files_are_valid_and_name_their_datasets():
    cpu = load_sweep(REPO / "leaderboards" / "sweep.yaml")
    datasets = {(j.model, j.evaluate["dataset"]) for j in cpu.jobs}
    assert datasets == {("mnist-smallcnn", "mnist"), ("cifar10-resnet-small", "cifar10")}
    assert {j.method for j in cpu.jobs if j.model == "mnist-smallcnn"} >= {"pretrained", "trades", "wdro-trades",
                                                                           "trades+armor-kl", "trades+armor-alpha"}
    assert all(j.evaluate["n_examples"] >= 1000 for j in cpu.jobs)
    cifar = [j for j in cpu.jobs if j.model == "cifar10-resnet-small" and j.finetune]
    assert cifar and all(j.finetune["dataset"] == "cifar10" and j.finetune["eps"] == "8/255" for j in cifar)
    gpu = load_sweep(REPO / "leaderboards" / "sweep-robustbench-gpu.yaml", check_device=False)
    assert len(gpu.jobs) == 25 and all(j.evaluate["device"] == "cuda" for j in gpu.jobs)
    if not torch.cuda.is_available():  # running it (not listing it) needs the GPU
        with pytest.raises(UserError, match="CUDA"):
            load_sweep(REPO / "leaderboards" / "sweep-robustbench-gpu.yaml")


W2_SPEC = """
records: records
runs: runs
models: [mnist-smallcnn]
common: {{dataset: mnist, threat_model: Linf}}
evaluate: {{metrics: "clean,distances", delta: "0.1", n_examples: 20}}
methods:
  - name: w
    finetune: {{method: trades, threat: w2, delta: 0.1, steps: 2{cap}}}
"""


@pytest.mark.parametrize("cap, same_as_old_absent", [(", w2_budget_cap: none", True), ("", False),
                                                       (", w2_budget_cap: null", False)])
def test_w2_job_ids_keep_the_old_uncapped_default_and_never_collide_with_the_new_one(tmp_path, cap,
                                                                                      same_as_old_absent):
    """The cap default changed (uncapped -> eps): ``none`` written out hashes as the absent key did before; the
    new default (absent or null) never gets the id of an old uncapped job. The evaluation's ``delta`` is
    read by ``distances`` and is no unused option."""
    from wdro_finetune.results.records import stable_hash

    path = tmp_path / "s.yaml"
    path.write_text(W2_SPEC.format(cap=cap))
    (job,) = load_sweep(path).jobs
    old_identity = {"model": "mnist-smallcnn", "method": "w", "seed": 0, "evaluate": {
        "dataset": "mnist", "threat_model": "Linf", "metrics": "clean,distances", "delta": "0.1", "n_examples": 20,
        "model": "mnist-smallcnn", "seed": 0}, "finetune": {"dataset": "mnist", "threat_model": "Linf",
        "method": "trades", "threat": "w2", "delta": 0.1, "steps": 2, "model": "mnist-smallcnn", "seed": 0}}
    assert (job.job_id == stable_hash(old_identity, 12)) is same_as_old_absent


def test_an_evaluate_deltas_key_is_the_delta_key_with_the_same_job_id(tmp_path):
    """``deltas:`` (the flag's name) and ``delta:`` (the key job ids have always hashed) are one option."""
    ids = []
    for key in ("delta", "deltas"):
        path = tmp_path / f"{key}.yaml"
        path.write_text(f"models: [mnist-smallcnn]\ncommon: {{dataset: mnist}}\nevaluate: {{metrics: wdro, {key}: "
                        f"'0.05,0.1'}}\nmethods:\n  - name: pretrained\n")
        jobs = load_sweep(path, check_device=False).jobs
        assert jobs[0].evaluate["delta"] == "0.05,0.1" and "deltas" not in jobs[0].evaluate
        ids.append(jobs[0].job_id)
    assert ids[0] == ids[1]
